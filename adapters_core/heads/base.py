"""Flexible prediction heads. Each is an ``nn.Sequential`` so weight keys are
``heads.<name>.<index>.weight`` exactly as in the reference library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers.modeling_outputs import (
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import ModelOutput

from ..kernels import Dropout
from ..methods.base import Activation


@dataclass
class MultiHeadOutput(ModelOutput):
    """Outputs of several heads (Parallel / BatchSplit). ``logits`` stacks them on the batch."""

    head_outputs: list[Any] | None = None
    loss: torch.FloatTensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        return torch.vstack([o["logits"] for o in self.head_outputs or []])

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, int):
            return (self.head_outputs or [])[k]
        return super().__getitem__(k)

    def __iter__(self) -> Any:
        return iter(self.head_outputs or [])

    def __len__(self) -> int:
        return len(self.head_outputs or [])


def _hidden_dropout(model_config: Any, head_config: dict[str, Any]) -> float:
    if head_config.get("dropout_prob") is not None:
        return float(head_config["dropout_prob"])
    if getattr(model_config, "classifier_dropout", None) is not None:
        return float(model_config.classifier_dropout)
    return float(getattr(model_config, "hidden_dropout_prob", 0.0))


def _id2label_to_label2id(
    id2label: dict[int, str] | None, num_labels: int | None = None
) -> dict[str, int] | None:
    if id2label is None:
        if num_labels is None:
            return None
        # the reference names unnamed labels like transformers does
        return {f"LABEL_{i}": i for i in range(num_labels)}
    return {label: int(i) for i, label in id2label.items()}


class PredictionHead(nn.Sequential):
    """A head; ``config`` is what ``head_config.json`` stores under ``config``."""

    head_type: str = ""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.config: dict[str, Any] = {}

    def build(self, model_config: Any) -> None:
        hidden = model_config.hidden_size
        layers: list[nn.Module] = []
        dropout = _hidden_dropout(model_config, self.config)
        bias = self.config.get("bias", True)
        n_layers = self.config["layers"]
        for layer_id in range(n_layers):
            layers.append(Dropout(dropout))
            if layer_id < n_layers - 1:
                layers.append(nn.Linear(hidden, hidden))
                if self.config["activation_function"]:
                    layers.append(Activation(self.config["activation_function"]))
            elif "num_labels" in self.config:
                layers.append(nn.Linear(hidden, self.config["num_labels"], bias=bias))
            elif "num_choices" in self.config:
                layers.append(nn.Linear(hidden, 1, bias=bias))
            else:
                layers.append(nn.Linear(hidden, hidden, bias=bias))
                if self.config["activation_function"]:
                    layers.append(Activation(self.config["activation_function"]))
        for i, module in enumerate(layers):
            self.add_module(str(i), module)
        std = getattr(model_config, "initializer_range", 0.02)
        self.apply(lambda m: _init_module(m, std))

    def get_output_embeddings(self) -> nn.Module | None:
        return None

    def _pooled_input(self, sequence_output: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        if self.config.get("use_pooler"):
            pooled = kwargs.get("pooled_output")
            if pooled is None:
                raise ValueError(f"Head {self.name!r} uses the pooler but the model has none.")
            return pooled
        cls = kwargs.get("cls_output")
        return cls if cls is not None else sequence_output[:, 0]

    def forward(self, sequence_output: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[override]
        raise NotImplementedError


def _init_module(module: nn.Module, std: float) -> None:
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class ClassificationHead(PredictionHead):
    head_type = "classification"

    def __init__(
        self,
        model_config: Any,
        name: str,
        num_labels: int = 2,
        layers: int = 2,
        activation_function: str | None = "tanh",
        id2label: dict[int, str] | None = None,
        use_pooler: bool = False,
        bias: bool = True,
        dropout_prob: float | None = None,
    ) -> None:
        super().__init__(name)
        self.config = {
            "head_type": self.head_type,
            "num_labels": num_labels,
            "layers": layers,
            "activation_function": activation_function,
            "label2id": _id2label_to_label2id(id2label, num_labels),
            "use_pooler": use_pooler,
            "bias": bias,
            "dropout_prob": dropout_prob,
        }
        self.build(model_config)

    def forward(self, sequence_output: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[override]
        logits = super(PredictionHead, self).forward(self._pooled_input(sequence_output, kwargs))
        loss = None
        labels = kwargs.get("labels")
        if labels is not None:
            if self.config["num_labels"] == 1:
                loss = MSELoss()(logits.view(-1), labels.view(-1).to(logits.dtype))
            else:
                loss = CrossEntropyLoss()(
                    logits.view(-1, self.config["num_labels"]), labels.view(-1)
                )
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MultiLabelClassificationHead(ClassificationHead):
    head_type = "multilabel_classification"

    def forward(self, sequence_output: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[override]
        logits = nn.Sequential.forward(self, self._pooled_input(sequence_output, kwargs))
        loss = None
        labels = kwargs.get("labels")
        if labels is not None:
            loss = BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MultipleChoiceHead(PredictionHead):
    head_type = "multiple_choice"

    def __init__(
        self,
        model_config: Any,
        name: str,
        num_choices: int = 2,
        layers: int = 2,
        activation_function: str | None = "tanh",
        id2label: dict[int, str] | None = None,
        use_pooler: bool = False,
        dropout_prob: float | None = None,
    ) -> None:
        super().__init__(name)
        self.config = {
            "head_type": self.head_type,
            "num_choices": num_choices,
            "layers": layers,
            "activation_function": activation_function,
            "label2id": _id2label_to_label2id(id2label),
            "use_pooler": use_pooler,
            "dropout_prob": dropout_prob,
        }
        self.build(model_config)

    def forward(self, sequence_output: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[override]
        logits = nn.Sequential.forward(self, self._pooled_input(sequence_output, kwargs))
        logits = logits.view(-1, self.config["num_choices"])
        loss = None
        labels = kwargs.get("labels")
        if labels is not None:
            loss = CrossEntropyLoss()(logits, labels)
        return MultipleChoiceModelOutput(loss=loss, logits=logits)


class TaggingHead(PredictionHead):
    head_type = "tagging"

    def __init__(
        self,
        model_config: Any,
        name: str,
        num_labels: int = 2,
        layers: int = 1,
        activation_function: str | None = "tanh",
        id2label: dict[int, str] | None = None,
        dropout_prob: float | None = None,
    ) -> None:
        super().__init__(name)
        self.config = {
            "head_type": self.head_type,
            "num_labels": num_labels,
            "layers": layers,
            "activation_function": activation_function,
            "label2id": _id2label_to_label2id(id2label, num_labels),
            "dropout_prob": dropout_prob,
        }
        self.build(model_config)

    def forward(self, sequence_output: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[override]
        logits = nn.Sequential.forward(self, sequence_output)
        loss = None
        labels = kwargs.get("labels")
        if labels is not None:
            loss_fct = CrossEntropyLoss()
            flat_logits = logits.view(-1, self.config["num_labels"])
            attention_mask = kwargs.get("attention_mask")
            if attention_mask is not None:
                active = attention_mask.view(-1) == 1
                flat_labels = torch.where(
                    active, labels.view(-1), torch.tensor(loss_fct.ignore_index).type_as(labels)
                )
                loss = loss_fct(flat_logits, flat_labels)
            else:
                loss = loss_fct(flat_logits, labels.view(-1))
        return TokenClassifierOutput(loss=loss, logits=logits)


class QuestionAnsweringHead(PredictionHead):
    head_type = "question_answering"

    def __init__(
        self,
        model_config: Any,
        name: str,
        num_labels: int = 2,
        layers: int = 1,
        activation_function: str | None = "tanh",
        id2label: dict[int, str] | None = None,
        dropout_prob: float | None = None,
    ) -> None:
        super().__init__(name)
        self.config = {
            "head_type": self.head_type,
            "num_labels": num_labels,
            "layers": layers,
            "activation_function": activation_function,
            "label2id": _id2label_to_label2id(id2label, num_labels),
            "dropout_prob": dropout_prob,
        }
        self.build(model_config)

    def forward(self, sequence_output: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[override]
        logits = nn.Sequential.forward(self, sequence_output)
        start_logits, end_logits = logits.split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()
        loss = None
        start_positions = kwargs.get("start_positions")
        end_positions = kwargs.get("end_positions")
        if start_positions is not None and end_positions is not None:
            if start_positions.dim() > 1:
                start_positions = start_positions.squeeze(-1)
            if end_positions.dim() > 1:
                end_positions = end_positions.squeeze(-1)
            ignored = start_logits.size(1)
            start_positions = start_positions.clamp(0, ignored)
            end_positions = end_positions.clamp(0, ignored)
            loss_fct = CrossEntropyLoss(ignore_index=ignored)
            loss = (
                loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)
            ) / 2
        return QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits
        )
