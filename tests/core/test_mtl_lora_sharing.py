"""MTL-LoRA's share_parameters / unshare_parameters (the reference's, adapters 1.2+): task
adapters use one A and one B per layer; each saved adapter holds them as its own weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from adapters_core import BertAdapterModel, MultiTask
from adapters_core.errors import AdapterConfigError
from adapters_core.methods.lora import lora_layers

from .conftest import tiny_bert_config

CONFIG = "mtl_lora[n_up_projection=2, init_weights=bert, alpha=16, attn_matrices=['q','v']]"
TASKS = ("a", "b", "c")
IDS = torch.randint(5, 900, (3, 8), generator=torch.Generator().manual_seed(1))


def _model() -> Any:
    torch.manual_seed(0)
    model = BertAdapterModel(tiny_bert_config()).eval()
    for task in TASKS:
        model.add_adapter(task, CONFIG)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # every task different and every weight mattering
        for name, p in model.named_parameters():
            if ".loras." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _hidden(model: Any, setup: Any = None, **kwargs: Any) -> torch.Tensor:
    model.set_active_adapters(setup)
    with torch.no_grad():
        return model.bert(input_ids=IDS, **kwargs).last_hidden_state


def _routed(model: Any) -> torch.Tensor:
    return _hidden(model, MultiTask(*TASKS), task_ids=[0, 1, 2])


def test_shared_tasks_use_the_reference_adapters_a_and_b() -> None:
    model = _model()
    before_b = _hidden(model, "b")
    # by hand: b with a's A and B copied in, its own task matrix and weights kept
    manual = copy.deepcopy(model)
    with torch.no_grad():
        for layer in lora_layers(manual.bert):
            layer.loras["b"].lora_A.copy_(layer.loras["a"].lora_A)
            layer.loras["b"].lora_B.copy_(layer.loras["a"].lora_B)
    model.share_parameters(MultiTask(*TASKS))
    shared_b = _hidden(model, "b")
    assert (shared_b - before_b).abs().max() > 1e-3
    torch.testing.assert_close(shared_b, _hidden(manual, "b"), atol=1e-6, rtol=0)
    for layer in lora_layers(model.bert):
        shared = layer.shared_parameters["a,b,c"]
        assert all(layer.loras[t].lora_A is shared["lora_A"] for t in TASKS)
        assert all(layer.loras[t].lora_B is shared["lora_B"] for t in TASKS)
    keys = model.state_dict().keys()
    assert any(".shared_parameters.a,b,c.lora_A" in k for k in keys)

    # one training step moves the one shared A for all tasks (the optimizer sees it once)
    model.train_adapter(list(TASKS))
    params = [p for p in model.parameters() if p.requires_grad]
    assert len({id(p) for p in params}) == len(params)
    optimizer = torch.optim.SGD(params, lr=0.5)
    model.set_active_adapters(MultiTask(*TASKS))
    out = model.bert(input_ids=IDS, task_ids=[0, 1, 2]).last_hidden_state
    out[..., :8].sum().backward()  # (the squares of a LayerNorm output sum to a constant)
    first = lora_layers(model.bert)[0]
    old = first.loras["c"].lora_A.detach().clone()
    optimizer.step()
    assert not torch.equal(first.loras["c"].lora_A, old)
    assert first.loras["c"].lora_A is first.loras["a"].lora_A


def test_save_load_round_trip_of_shared_tasks(tmp_path: Path) -> None:
    model = _model()
    model.share_parameters(["a", "b", "c"], reference_adapter_name="b")
    expected = _routed(model)
    for task in TASKS:
        model.save_adapter(tmp_path / task, task)
    saved = load_file(str(tmp_path / "a" / "adapter.safetensors"))
    assert not any("shared_parameters" in k for k in saved)
    a_keys = [k for k in saved if k.endswith(".loras.a.lora_A")]
    assert a_keys
    b_saved = load_file(str(tmp_path / "b" / "adapter.safetensors"))
    for k in a_keys:  # each task's file holds the one shared A (b's, the reference)
        assert torch.equal(saved[k], b_saved[k.replace(".loras.a.", ".loras.b.")])

    torch.manual_seed(0)
    fresh = BertAdapterModel(tiny_bert_config()).eval()
    for task in TASKS:
        fresh.load_adapter(tmp_path / task)
    torch.testing.assert_close(_routed(fresh), expected, atol=1e-6, rtol=0)
    fresh.share_parameters("a,b,c")  # all copies are equal: sharing again changes nothing
    torch.testing.assert_close(_routed(fresh), expected, atol=1e-6, rtol=0)
    first = lora_layers(fresh.bert)[0]
    assert first.loras["c"].lora_B is first.loras["a"].lora_B


def test_unshare_gives_each_task_its_own_copy() -> None:
    model = _model()
    model.share_parameters(MultiTask(*TASKS), name="shared")
    expected = {t: _hidden(model, t) for t in TASKS}
    model.unshare_parameters(MultiTask(*TASKS), name="shared")
    assert not any("shared_parameters" in k for k in model.state_dict())
    for t in TASKS:
        torch.testing.assert_close(_hidden(model, t), expected[t], atol=1e-6, rtol=0)
    first = lora_layers(model.bert)[0]
    assert first.loras["a"].lora_A is not first.loras["b"].lora_A
    with torch.no_grad():
        a = first.loras["a"].lora_A
        a.add_(torch.randn(a.shape, generator=torch.Generator().manual_seed(4)))
    torch.testing.assert_close(_hidden(model, "b"), expected["b"], atol=1e-6, rtol=0)
    assert (_hidden(model, "a") - expected["a"]).abs().max() > 1e-3


def test_deleting_every_sharing_task_drops_the_shared_weights() -> None:
    model = _model()
    model.share_parameters(["a", "b"])
    model.delete_adapter("a")
    assert any(".shared_parameters.a,b." in k for k in model.state_dict())
    model.delete_adapter("b")
    assert not any("shared_parameters" in k for k in model.state_dict())


def test_bad_sharing_requests_name_the_problem() -> None:
    model = _model()
    model.add_adapter("plain", "lora")
    model.add_adapter("wide", "mtl_lora[r=4]")
    with pytest.raises(AdapterConfigError, match="'plain' is LoRAConfig"):
        model.share_parameters(["a", "plain"])
    with pytest.raises(AdapterConfigError, match="Reference adapter 'z'"):
        model.share_parameters(["a", "b"], reference_adapter_name="z")
    with pytest.raises(AdapterConfigError, match="'a' and 'wide' cannot share lora_A"):
        model.share_parameters(["a", "wide"])
    with pytest.raises(AdapterConfigError, match="cannot be named 'c'"):
        model.share_parameters(["a", "b"], name="c")
    with pytest.raises(AdapterConfigError, match="at least one"):
        model.share_parameters([])
    assert not any("shared_parameters" in k for k in model.state_dict())
