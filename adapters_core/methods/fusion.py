"""AdapterFusion (Pfeiffer et al. 2021): attention over the outputs of several adapters."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..kernels import Dropout


def _per_token(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` for x of shape (batch, seq, n_adapters, hidden), as one GEMM with its bias.

    ``F.linear`` fuses the bias only into 2-D and contiguous 3-D inputs; a 4-D one costs a
    matmul, a separate add and, in backward, a slow strided sum for the bias gradient.
    """
    if x.dim() == 4 and x.is_contiguous():
        return linear(x.flatten(1, 2)).unflatten(1, x.shape[1:3])
    return linear(x)


class AdapterFusionLayer(nn.Module):
    """Parameter names as in the reference (``query``, ``key``, ``value`` without bias)."""

    def __init__(self, config: Any, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.config = config
        self.dense_size = hidden_size
        self.dropout = Dropout(dropout_prob)
        if not config["query"] and not config["key"] and not config["value"]:
            self.dense = nn.Linear(hidden_size, 1)
        if config["query"]:
            self.query = nn.Linear(hidden_size, hidden_size)
            self._init_linear(self.query)
        if config["key"]:
            self.key = nn.Linear(hidden_size, hidden_size)
            self._init_linear(self.key)
        if config["value"]:
            self.value = nn.Linear(hidden_size, hidden_size, bias=False)
            self._init_linear(self.value)
            if config["value_initialized"]:
                with torch.no_grad():
                    self.value.weight.fill_(1e-6).fill_diagonal_(1.0)
        self.T = 50.0 if config["temperature"] else 1.0
        self.reduction = self.T / 1000.0

    @staticmethod
    def _init_linear(layer: nn.Linear) -> None:
        with torch.no_grad():
            layer.weight.normal_(0.0, 0.02)
            if layer.bias is not None:
                layer.bias.zero_()

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        residual: torch.Tensor,
        output_attentions: bool = False,
    ) -> Any:
        # key/value: (batch, seq, n_adapters, hidden); query/residual: (batch, seq, hidden)
        if self.config["residual_before"]:
            value = value + residual[:, :, None, :]
        query_layer = self.query(query) if self.config["query"] else query
        key_layer = _per_token(self.key, key) if self.config["key"] else key
        if self.config["value"] and self.config["value_before_softmax"]:
            value_layer = _per_token(self.value, value)
        else:
            value_layer = value
        scores = torch.matmul(query_layer.unsqueeze(2), key_layer.transpose(-2, -1)).squeeze(2)
        scores = self.dropout(scores)
        probs = torch.softmax(scores / self.T, dim=-1)
        if self.training:
            # temperature annealing, as in the reference (only moves while T > 1)
            self.T = max(self.T - self.reduction, 1.0)
        context = torch.matmul(probs.unsqueeze(2), value_layer).squeeze(2)
        if self.config["value"] and not self.config["value_before_softmax"]:
            context = self.value(context)
        if not self.config["residual_before"]:
            context = context + residual
        if output_attentions:
            return context, probs.detach().cpu().numpy()
        return context
