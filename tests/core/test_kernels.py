"""The CPU training kernels: same distribution as PyTorch's dropout, same attention as SDPA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import adapters_core
from adapters_core import BertAdapterModel, kernels

from .conftest import tiny_bert_config, tiny_inputs


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = kernels.dropout(x, p)
    kept = y != 0
    # 1e6 Bernoulli draws: the standard deviation of the kept fraction is below 5e-4
    assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, 2.0 * y.detach())


def test_dropout_outside_training_or_at_p0_is_the_identity() -> None:
    x = torch.randn(4, 8)
    assert kernels.dropout(x, 0.1, training=False) is x
    assert torch.equal(kernels.dropout(x, 0.0), x)
    assert torch.equal(kernels.Dropout(0.3).eval()(x), x)


def test_dropout_masks_follow_the_torch_seed() -> None:
    x = torch.randn(64, 64)
    torch.manual_seed(3)
    first = kernels.dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(kernels.dropout(x, 0.2), first)


def _qkv(mask: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 8, generator=g) for _ in range(3))
    attn_mask = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    attn_mask[1, :, :, 6:] = False
    attn_mask[1, :, 0, :] = False  # a query that sees no key: zeros, as in SDPA's math path
    return q, k, v, (attn_mask if mask else None)


@pytest.mark.parametrize("with_mask", [False, True])
def test_attention_matches_sdpa_when_nothing_is_dropped(with_mask: bool) -> None:
    q, k, v, mask = _qkv(with_mask)
    # p so small that no element is dropped; the scale 1 / (1 - p) is then 1 in float32
    ours = kernels._attention_with_dropout(q, k, v, mask, 1e-12, None)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_attention_dropout_drops_probabilities_at_rate_p() -> None:
    torch.manual_seed(0)
    q = torch.zeros(8, 4, 64, 16)  # uniform attention: every probability is 1/64
    v = torch.eye(64).expand(8, 4, 64, 64)  # the output row is the dropped probability row
    out = kernels._attention_with_dropout(q, q, v, None, 0.25, None)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 64 / 0.75))


def test_model_trains_with_the_kernels_and_infers_as_before(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertAdapterModel(tiny_bert_config(attn_implementation="sdpa"))
    assert model.config._attn_implementation == kernels.ATTENTION_NAME
    assert all(
        type(m) is kernels.Dropout for m in model.modules() if isinstance(m, torch.nn.Dropout)
    )
    model.add_adapter("a", config="seq_bn")
    model.add_classification_head("a", num_labels=2)
    model.train_adapter("a")
    assert all(
        type(m) is kernels.Dropout for m in model.modules() if isinstance(m, torch.nn.Dropout)
    )

    inputs = tiny_inputs()
    model.eval()
    with torch.no_grad():
        before = model(**inputs).logits
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():
        stock = model(**inputs).logits
    model.config._attn_implementation = kernels.ATTENTION_NAME
    torch.testing.assert_close(before, stock, rtol=0, atol=0)

    model.train()
    out = model(**inputs, labels=torch.tensor([0, 1, 0]))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    # the kernel's name stays out of config.json: the saved model loads without adapters_core
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert kernels.ATTENTION_NAME not in json.dumps(saved)


def test_init_puts_the_kernels_into_a_static_model() -> None:
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(tiny_bert_config(attn_implementation="sdpa"))
    adapters_core.init(model)
    assert model.config._attn_implementation == kernels.ATTENTION_NAME
    assert type(model.dropout) is kernels.Dropout


def test_eager_attention_is_left_alone() -> None:
    model = BertAdapterModel(tiny_bert_config(attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"


def test_dropout_falls_back_to_torch_for_half_precision() -> None:
    x = torch.ones(1000, dtype=torch.bfloat16)
    torch.manual_seed(1)
    ours = kernels.dropout(x, 0.5)
    torch.manual_seed(1)
    assert torch.equal(ours, F.dropout(x, 0.5, True))
