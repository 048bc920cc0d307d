"""RoBERTa: where adapters go. Same layout as BERT under the ``roberta`` prefix."""

from .spec import ArchitectureSpec, StaticHeadSpec

SPEC = ArchitectureSpec(
    model_type="roberta",
    base_model_prefix="roberta",
    base_model_class="transformers:RobertaModel",
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
        "RobertaForSequenceClassification": StaticHeadSpec(
            {
                "head_type": "classification",
                "layers": 2,
                "activation_function": "tanh",
                "use_pooler": False,
            },
            {"classifier.dense": 1, "classifier.out_proj": 4},
        ),
        "RobertaForTokenClassification": StaticHeadSpec(
            {"head_type": "tagging", "layers": 1, "activation_function": None},
            {"classifier": 1},
        ),
        "RobertaForQuestionAnswering": StaticHeadSpec(
            {"head_type": "question_answering", "layers": 1, "activation_function": None},
            {"qa_outputs": 1},
        ),
    },
)
