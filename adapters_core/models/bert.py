"""BERT: where adapters go. Read by generic code in methods/ and models/adapter_model.py."""

from .spec import ArchitectureSpec, StaticHeadSpec

SPEC = ArchitectureSpec(
    model_type="bert",
    base_model_prefix="bert",
    base_model_class="transformers:BertModel",
    embeddings="embeddings",
    layers="encoder.layer",
    attention_output="attention.output",
    ffn_output="output",
    output_dense="dense",
    output_dropout="dropout",
    output_layer_norm="LayerNorm",
    self_attention="attention.self",
    query="query",
    key="key",
    value="value",
    intermediate="intermediate.dense",
    static_heads={
        "BertForSequenceClassification": StaticHeadSpec(
            {
                "head_type": "classification",
                "layers": 1,
                "activation_function": None,
                "use_pooler": True,
            },
            {"classifier": 1},
        ),
        "BertForTokenClassification": StaticHeadSpec(
            {"head_type": "tagging", "layers": 1, "activation_function": None},
            {"classifier": 1},
        ),
        "BertForQuestionAnswering": StaticHeadSpec(
            {"head_type": "question_answering", "layers": 1, "activation_function": None},
            {"qa_outputs": 1},
        ),
    },
)
