"""Parameter counts equal the reference formula (bert-base shape, built on the meta device)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

import adapters_core


def _bert_base() -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: no 440 MB of random weights
        return adapters_core.init(BertModel(BertConfig()))


def _bottleneck_params(h: int, rf: float, locations: int, layers: int = 12) -> int:
    d = max(1, int(h // rf))
    return (2 * h * d + d + h) * locations * layers


# (config, expected count) from the reference library's adapter_summary() on bert-base
REFERENCE_COUNTS = [
    ("seq_bn", 894_528),
    ("seq_bn[reduction_factor=8]", 1_779_840),
    ("seq_bn[reduction_factor=32]", 451_872),
    ("seq_bn[reduction_factor=64]", 230_544),
    ("double_seq_bn", 1_789_056),
    ("double_seq_bn[reduction_factor=32]", 903_744),
    ("par_bn", 7_091_712),
    ("scaled_par_bn", 7_091_724),
    ("seq_bn_inv", 1_190_592),
    ("double_seq_bn_inv", 2_085_120),
]


@pytest.mark.parametrize("config,expected", REFERENCE_COUNTS)
def test_counts_match_reference(config: str, expected: int) -> None:
    model = _bert_base()
    model.add_adapter("x", config=config)
    rows = model.adapter_summary(as_dict=True)
    assert rows[0]["#param"] == expected
    assert rows[-1]["name"] == "Full model" and rows[-1]["#param"] == 109_482_240


def test_formula_seq_bn_and_double() -> None:
    assert _bottleneck_params(768, 16, 1) == 894_528
    assert _bottleneck_params(768, 16, 2) == 1_789_056


def test_percentages_and_summary_text() -> None:
    model = _bert_base()
    model.add_adapter("pfeiffer_rf16", config="pfeiffer")
    model.set_active_adapters("pfeiffer_rf16")
    rows = model.adapter_summary(as_dict=True)
    assert round(rows[0]["%param"], 3) == 0.817
    assert rows[0]["active"] is True
    text = model.adapter_summary()
    assert "pfeiffer_rf16" in text and "894,528" in text and "109,482,240" in text


def test_per_layer_reduction_factor_and_leave_out() -> None:
    model = _bert_base()
    model.add_adapter(
        "x", config="seq_bn[reduction_factor={'0': 8, 'default': 16}, leave_out=[11]]"
    )
    per_layer = 2 * 768 * 48 + 48 + 768
    layer0 = 2 * 768 * 96 + 96 + 768
    assert model.adapter_summary(as_dict=True)[0]["#param"] == layer0 + per_layer * 10
    assert 11 not in model.get_adapter("x")


def test_extra_modules_counted() -> None:
    h, d = 768, 48
    base = 2 * h * d + d + h
    model = _bert_base()
    model.add_adapter(
        "x", config="seq_bn[ln_before=True, ln_after=True, use_gating=True, scaling='channel']"
    )
    per = base + 2 * h + 2 * h + (h + 1) + h
    assert model.adapter_summary(as_dict=True)[0]["#param"] == per * 12


def test_roberta_base_count() -> None:
    with torch.device("meta"):
        model = adapters_core.init(
            RobertaModel(
                RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1)
            )
        )
    model.add_adapter("x")
    rows = model.adapter_summary(as_dict=True)
    assert rows[0]["#param"] == 894_528
    assert rows[-1]["#param"] == 124_645_632
