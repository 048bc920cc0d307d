"""BERT: where adapters go. Read by generic code in methods/ and models/adapter_model.py."""

from .spec import (
    ArchitectureSpec,
    LayerStack,
    LinearSpec,
    StaticHeadSpec,
    bert_style_locations,
    qkv_linears,
)

# BERT-style layer: attention.self.{query,key,value}, attention.output (dense, dropout, LN),
# intermediate.dense, output (dense, dropout, LN). Shared by RoBERTa, XLM-R and ELECTRA.
BERT_LINEARS = (
    *qkv_linears("attention", ("self.query", "self.key", "self.value", "output.dense")),
    LinearSpec("intermediate.dense", "intermediate"),
    LinearSpec("output.dense", "output"),
)
BERT_STACKS = (LayerStack("layers", "encoder.layer", bert_style_locations(), BERT_LINEARS),)

SPEC = ArchitectureSpec(
    model_type="bert",
    base_model_prefix="bert",
    base_model_class="transformers:BertModel",
    stacks=BERT_STACKS,
    embeddings="embeddings",
    has_pooler=True,
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
