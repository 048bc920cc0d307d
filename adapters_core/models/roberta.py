"""RoBERTa: where adapters go. Same layout as BERT under the ``roberta`` prefix."""

from .bert import BERT_STACKS
from .spec import ArchitectureSpec, StaticHeadSpec

SPEC = ArchitectureSpec(
    model_type="roberta",
    base_model_prefix="roberta",
    base_model_class="transformers:RobertaModel",
    stacks=BERT_STACKS,
    embeddings="embeddings",
    has_pooler=True,
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
