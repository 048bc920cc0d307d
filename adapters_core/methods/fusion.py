"""AdapterFusion (Pfeiffer et al. 2021): attention over the outputs of several adapters."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..kernels import Dropout


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
        # key/value: (batch, seq, n_adapters, hidden); query/residual: (batch, seq, hidden).
        # The projections are linear, so they act on the per-token query and the weighted sum
        # instead of on every adapter's output: key(u) . q = u . (W_k^T q) + b_k . q, and
        # sum_n p_n value(u_n) = value(sum_n p_n u_n) (no bias). Same function, half the GEMMs.
        if self.config["residual_before"]:
            value = value + residual[:, :, None, :]
        query_layer = self.query(query) if self.config["query"] else query
        if self.config["key"]:
            projected = query_layer @ self.key.weight
            scores = torch.matmul(key, projected.unsqueeze(-1)).squeeze(-1)
            scores = scores + (query_layer @ self.key.bias).unsqueeze(-1)
        else:
            scores = torch.matmul(key, query_layer.unsqueeze(-1)).squeeze(-1)
        scores = self.dropout(scores)
        probs = torch.softmax(scores / self.T, dim=-1)
        if self.training:
            # temperature annealing, as in the reference (only moves while T > 1)
            self.T = max(self.T - self.reduction, 1.0)
        context = torch.matmul(probs.unsqueeze(2), value).squeeze(2)
        if self.config["value"]:
            context = self.value(context)
        if not self.config["residual_before"]:
            context = context + residual
        if output_attentions:
            return context, probs.detach().cpu().numpy()
        return context
