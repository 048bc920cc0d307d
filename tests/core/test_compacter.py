"""Compacter (PHM bottleneck adapters): the shared PHM rule is one tensor of the adapter,
stored once under the reference's key, and sizes a PHM layer cannot factor are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

import adapters_core
from adapters_core import AutoAdapterModel
from adapters_core.errors import AdapterConfigError

from .conftest import INTEROP

BASE = INTEROP / "models" / "tiny-bert"
IDS = torch.tensor([[5, 17, 99, 3, 42, 8]])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoAdapterModel.from_pretrained(str(BASE))
    model.add_adapter("c", "compacter[reduction_factor=8]", set_active=True)
    return model.eval()


def test_shared_rule_is_saved_once_and_used_by_every_layer(tmp_path: Path) -> None:
    model = _model()
    model.save_adapter(tmp_path / "c", "c", with_head=False)
    state = load_file(tmp_path / "c" / "adapter.safetensors")
    rules = [k for k in state if "phm_rule" in k]
    assert rules == ["bert.shared_parameters.c.phm_rule"]
    assert len([k for k in state if k.endswith(".W_left")]) == 8  # 2 layers x 2 locations x 2
    rule = model.bert.shared_parameters["c"]["phm_rule"]
    with torch.no_grad():
        rule.normal_(0.0, 0.5)  # the init (std 1e-4) leaves the adapter nearly a no-op
        before = model(IDS).last_hidden_state
        rule.mul_(3.0)
        after = model(IDS).last_hidden_state
    assert (before - after).abs().max() > 1e-6  # the layers read the shared tensor


def test_plain_model_saves_shared_rule_for_the_adapter_model(tmp_path: Path) -> None:
    """A bare base model after init() has the shared tensors at the top level
    (``shared_parameters.c.phm_rule``): they belong to the adapter all the same."""
    torch.manual_seed(0)
    plain = adapters_core.init(BertModel.from_pretrained(str(BASE)))
    plain.add_adapter("c", "compacter[reduction_factor=8]", set_active=True)
    with torch.no_grad():
        plain.shared_parameters["c"]["phm_rule"].normal_(0.0, 0.5)
    plain.eval()
    plain.save_adapter(tmp_path / "c", "c")
    assert "shared_parameters.c.phm_rule" in load_file(tmp_path / "c" / "adapter.safetensors")
    torch.manual_seed(1)
    other = AutoAdapterModel.from_pretrained(str(BASE)).eval()
    other.load_adapter(tmp_path / "c", set_active=True)
    with torch.no_grad():
        assert torch.equal(plain(IDS).last_hidden_state, other(IDS).last_hidden_state)


def test_delete_adapter_removes_shared_parameters() -> None:
    model = _model()
    model.delete_adapter("c")
    assert "c" not in model.bert.shared_parameters
    assert not any(".c." in k for k in model.state_dict())


def test_phm_dim_must_divide_the_bottleneck() -> None:
    model = AutoAdapterModel.from_pretrained(str(BASE))
    # default reduction_factor 32: a bottleneck of 2 on hidden size 64, phm_dim 4
    with pytest.raises(AdapterConfigError, match="phm_dim=4 must divide"):
        model.add_adapter("c", "compacter")
    assert "c" not in model.adapters_config.adapters
    assert not any("adapters.c." in k for k in model.state_dict())


def test_adapter_to_casts_the_shared_rule_with_the_layers() -> None:
    model = _model()
    assert model.get_adapter("c")[-1]["shared"] is model.bert.shared_parameters["c"]
    model.adapter_to("c", dtype=torch.float64)
    assert model.bert.shared_parameters["c"]["phm_rule"].dtype == torch.float64
    assert model.bert.encoder.layer[0].output.adapters["c"].adapter_up.b.dtype == torch.float64
