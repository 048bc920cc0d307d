"""Language-modeling heads (masked LM, causal LM); the last module is the output projection."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast, MaskedLMOutput, Seq2SeqLMOutput

from ..methods.base import Activation
from .base import PredictionHead, _init_module


class CausalLMHead(PredictionHead):
    head_type = "causal_lm"

    def __init__(
        self,
        model_config: Any,
        name: str,
        vocab_size: int | None = None,
        embedding_size: int | None = None,
        layers: int = 1,
        activation_function: str | None = None,
        layer_norm: bool = False,
        bias: bool = False,
        shift_labels: bool = True,
        dropout_prob: float | None = None,
    ) -> None:
        super().__init__(name)
        self.config = {
            "head_type": self.head_type,
            "vocab_size": vocab_size or model_config.vocab_size,
            "embedding_size": embedding_size
            or getattr(model_config, "embedding_size", model_config.hidden_size),
            "layers": layers,
            "activation_function": activation_function,
            "layer_norm": layer_norm,
            "bias": bias,
            "shift_labels": shift_labels,
            "label2id": None,
            "dropout_prob": dropout_prob,
        }
        self.build(model_config)

    def build(self, model_config: Any) -> None:
        hidden = model_config.hidden_size
        emb = self.config.get("embedding_size") or hidden
        modules: list[nn.Module] = []
        for layer_id in range(self.config["layers"] - 1):
            modules.append(nn.Linear(hidden if layer_id == 0 else emb, emb))
            if self.config["activation_function"]:
                modules.append(Activation(self.config["activation_function"]))
            if self.config.get("layer_norm"):
                eps = getattr(model_config, "layer_norm_eps", 1e-12)
                modules.append(nn.LayerNorm(emb, eps=eps))
        modules.append(nn.Linear(emb, self.config["vocab_size"], bias=self.config["bias"]))
        for i, module in enumerate(modules):
            self.add_module(str(i), module)
        std = getattr(model_config, "initializer_range", 0.02)
        self.apply(lambda m: _init_module(m, std))

    def get_output_embeddings(self) -> nn.Module:
        return self[len(self) - 1]

    def _output(self, loss: Any, logits: torch.Tensor) -> Any:
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def forward(self, sequence_output: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[override]
        hidden = sequence_output
        for i in range(len(self) - 1):
            hidden = self[i](hidden)
        inv_adapter = kwargs.get("invertible_adapter")
        if inv_adapter is not None:
            hidden = inv_adapter(hidden, rev=True)
        logits = self[len(self) - 1](hidden)
        loss = None
        labels = kwargs.get("labels")
        if labels is not None:
            if self.config["shift_labels"]:
                logits_for_loss = logits[..., :-1, :].contiguous()
                labels = labels[..., 1:].contiguous()
            else:
                logits_for_loss = logits
            loss = nn.CrossEntropyLoss()(
                logits_for_loss.view(-1, self.config["vocab_size"]), labels.reshape(-1)
            )
        return self._output(loss, logits)


class BertStyleMaskedLMHead(CausalLMHead):
    head_type = "masked_lm"

    def __init__(
        self,
        model_config: Any,
        name: str,
        vocab_size: int | None = None,
        embedding_size: int | None = None,
        layers: int = 2,
        activation_function: str | None = "gelu",
        layer_norm: bool = True,
        bias: bool = True,
        shift_labels: bool = False,
    ) -> None:
        PredictionHead.__init__(self, name)
        self.config = {
            "head_type": self.head_type,
            "vocab_size": vocab_size or model_config.vocab_size,
            "embedding_size": embedding_size
            or getattr(model_config, "embedding_size", model_config.hidden_size),
            "layers": layers,
            "activation_function": activation_function,
            "layer_norm": layer_norm,
            "bias": bias,
            "shift_labels": shift_labels,
            "label2id": None,
        }
        self.build(model_config)

    def _output(self, loss: Any, logits: torch.Tensor) -> Any:
        return MaskedLMOutput(loss=loss, logits=logits)


class Seq2SeqLMHead(CausalLMHead):
    """LM head on an encoder-decoder's decoder output (labels are not shifted)."""

    head_type = "seq2seq_lm"

    def __init__(
        self,
        model_config: Any,
        name: str,
        vocab_size: int | None = None,
        layers: int = 1,
        activation_function: str | None = None,
        layer_norm: bool = False,
        bias: bool = False,
        shift_labels: bool = False,
        embedding_size: int | None = None,
        dropout_prob: float | None = None,
    ) -> None:
        super().__init__(
            model_config,
            name,
            vocab_size=vocab_size,
            embedding_size=embedding_size,
            layers=layers,
            activation_function=activation_function,
            layer_norm=layer_norm,
            bias=bias,
            shift_labels=shift_labels,
            dropout_prob=dropout_prob,
        )
        # the reference's seq2seq head config has no embedding_size (nor an unset dropout_prob)
        self.config.pop("embedding_size", None)
        if self.config.get("dropout_prob") is None:
            self.config.pop("dropout_prob", None)

    def _output(self, loss: Any, logits: torch.Tensor) -> Any:
        return Seq2SeqLMOutput(loss=loss, logits=logits)
