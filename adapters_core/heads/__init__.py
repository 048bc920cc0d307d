"""Prediction heads for flexible-head models (``AutoAdapterModel``)."""

from .base import (
    ClassificationHead,
    MultiHeadOutput,
    MultiLabelClassificationHead,
    MultipleChoiceHead,
    PredictionHead,
    QuestionAnsweringHead,
    TaggingHead,
)
from .language_modeling import BertStyleMaskedLMHead, CausalLMHead, Seq2SeqLMHead

HEAD_TYPES: dict[str, type[PredictionHead]] = {
    "classification": ClassificationHead,
    "multilabel_classification": MultiLabelClassificationHead,
    "tagging": TaggingHead,
    "multiple_choice": MultipleChoiceHead,
    "question_answering": QuestionAnsweringHead,
    "masked_lm": BertStyleMaskedLMHead,
    "causal_lm": CausalLMHead,
    "seq2seq_lm": Seq2SeqLMHead,
}

__all__ = [
    "HEAD_TYPES",
    "BertStyleMaskedLMHead",
    "CausalLMHead",
    "ClassificationHead",
    "MultiHeadOutput",
    "MultiLabelClassificationHead",
    "MultipleChoiceHead",
    "PredictionHead",
    "QuestionAnsweringHead",
    "Seq2SeqLMHead",
    "TaggingHead",
]
