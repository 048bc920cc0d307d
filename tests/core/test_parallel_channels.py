"""Parallel and BatchSplit over adapters of different methods: each channel's output is the
model's output with that channel's adapter alone active (a channel whose adapter is not at a
layer gets the layer's plain output there; channels never share another method's steps)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from adapters_core import AutoAdapterModel, BatchSplit, BertAdapterModel, Parallel

from .conftest import INTEROP, tiny_bert_config

PAIRS = [
    ("lora", "seq_bn"),
    ("lora", "lora[attn_matrices=['q','k','v']]"),
    ("ia3", "par_bn"),
    ("lora", "ia3"),
    ("unipelt", "lora"),
]


def _model(arch: str, config_a: str, config_b: str) -> Any:
    torch.manual_seed(0)
    if arch == "bert":
        model = BertAdapterModel(tiny_bert_config()).eval()
    else:
        model = AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch)).eval()
    model.add_adapter("a", config=config_a)
    model.add_adapter("b", config=config_b)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move every adapter weight off its (often neutral) initial value
        for name, p in model.named_parameters():
            if ".a." in name or ".b." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _hidden(model: Any, setup: Any) -> torch.Tensor:
    ids = torch.randint(5, 400, (3, 6), generator=torch.Generator().manual_seed(1))
    model.set_active_adapters(setup)
    with torch.no_grad():
        return model.base_model(input_ids=ids).last_hidden_state


@pytest.mark.parametrize("arch", ["bert", "tiny-llama"])
@pytest.mark.parametrize(("config_a", "config_b"), PAIRS)
def test_each_channel_equals_its_adapter_alone(arch: str, config_a: str, config_b: str) -> None:
    if arch != "bert" and not INTEROP.is_dir():
        pytest.skip(f"interop fixtures not found at {INTEROP}")
    model = _model(arch, config_a, config_b)
    plain = _hidden(model, None)
    alone_a, alone_b = _hidden(model, "a"), _hidden(model, "b")
    assert (alone_a - plain).abs().max() > 1e-3 and (alone_b - plain).abs().max() > 1e-3
    both = _hidden(model, Parallel("a", "b"))
    assert both.shape[0] == 6
    torch.testing.assert_close(both[:3], alone_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[3:], alone_b, atol=1e-5, rtol=0)
    split = _hidden(model, BatchSplit("a", "b", batch_sizes=[1, 2]))
    torch.testing.assert_close(split[:1], alone_a[:1], atol=1e-5, rtol=0)
    torch.testing.assert_close(split[1:], alone_b[1:], atol=1e-5, rtol=0)
