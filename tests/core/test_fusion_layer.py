"""AdapterFusionLayer projects the query and the weighted sum, not every adapter's output:
the same function (and gradients) as the reference's order of operations."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from adapters_core.configuration import AdapterFusionConfig
from adapters_core.methods.fusion import AdapterFusionLayer


def _reference_order(layer: AdapterFusionLayer, query, key, value, residual) -> torch.Tensor:
    """The reference's forward (eval mode): key and value projected per adapter output."""
    config = layer.config
    if config["residual_before"]:
        value = value + residual[:, :, None, :]
    query_layer = layer.query(query) if config["query"] else query
    key_layer = layer.key(key) if config["key"] else key
    value_layer = (
        layer.value(value) if config["value"] and config["value_before_softmax"] else value
    )
    scores = torch.matmul(query_layer.unsqueeze(2), key_layer.transpose(-2, -1)).squeeze(2)
    probs = torch.softmax(scores / layer.T, dim=-1)
    context = torch.matmul(probs.unsqueeze(2), value_layer).squeeze(2)
    if config["value"] and not config["value_before_softmax"]:
        context = layer.value(context)
    if not config["residual_before"]:
        context = context + residual
    return context


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"residual_before": True},
        {"value_before_softmax": False},
        {"temperature": True},
        {"key": False, "query": False, "value": False},
    ],
)
def test_fusion_layer_matches_the_reference_order(overrides: dict[str, Any]) -> None:
    torch.manual_seed(0)
    config = AdapterFusionConfig.load("dynamic", **overrides)
    # In float64: the two orders are the same function, so only rounding may differ, and in
    # float32 that rounding depends on the machine's BLAS kernels and threads.
    layer = AdapterFusionLayer(config, 16, 0.0).eval().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.3)
    query, residual = (torch.randn(2, 5, 16, dtype=torch.float64) for _ in range(2))
    ups = torch.randn(2, 5, 3, 16, dtype=torch.float64, requires_grad=True)

    ours = layer(query, ups, ups, residual)
    weights = torch.linspace(-1, 1, 16, dtype=torch.float64)
    (ours * weights).sum().backward()
    ours_grads = [ups.grad.clone()] + [
        p.grad.clone() for p in layer.parameters() if p.grad is not None
    ]
    layer.zero_grad()
    ups.grad = None

    expected = _reference_order(layer, query, ups, ups, residual)
    (expected * weights).sum().backward()
    expected_grads = [ups.grad] + [p.grad for p in layer.parameters() if p.grad is not None]

    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(ours_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
