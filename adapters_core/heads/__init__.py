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
from .language_modeling import BertStyleMaskedLMHead, CausalLMHead

HEAD_TYPES: dict[str, type[PredictionHead]] = {
    "classification": ClassificationHead,
    "multilabel_classification": MultiLabelClassificationHead,
    "tagging": TaggingHead,
    "multiple_choice": MultipleChoiceHead,
    "question_answering": QuestionAnsweringHead,
    "masked_lm": BertStyleMaskedLMHead,
    "causal_lm": CausalLMHead,
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
    "TaggingHead",
]
