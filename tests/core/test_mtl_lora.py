"""MTL-LoRA: the reference's weights and arithmetic, MultiTask routing by task_ids, merging, and
a save/load round trip (decoders, fused QKV included) with identical outputs and generation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import GenerationConfig

from adapters_core import AutoAdapterModel, MultiTask
from adapters_core.errors import AdapterConfigError, CompositionError
from adapters_core.weights import adapter_filter

from .conftest import INTEROP

_BASES: dict[str, Any] = {}
CONFIG = "mtl_lora[n_up_projection=3, init_weights=bert, alpha=16]"


def _fresh(arch: str) -> Any:
    if arch not in _BASES:
        _BASES[arch] = AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch))
    torch.manual_seed(0)
    return copy.deepcopy(_BASES[arch])


def _two_tasks(arch: str) -> Any:
    model = _fresh(arch)
    model.add_adapter("a", CONFIG)
    model.add_adapter("b", CONFIG)
    with torch.no_grad():  # make both adapters matter
        for name, p in model.named_parameters():
            if ".loras." in name:
                p.normal_(0.0, 0.3)
    model.add_classification_head("h", num_labels=2)
    return model.eval()


def test_multitask_routes_each_example_to_its_task() -> None:
    model = _two_tasks("tiny-bert")
    ids = torch.randint(5, 400, (4, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.set_active_adapters(MultiTask("a", "b"))
        model.active_head = "h"
        routed = model(input_ids=ids, task_ids=[0, 1, 1, 0]).logits
        by_name = model(input_ids=ids, task_ids=["a", "b", "b", "a"]).logits
        model.set_active_adapters("a")
        model.active_head = "h"
        only_a = model(input_ids=ids).logits
        model.set_active_adapters("b")
        model.active_head = "h"
        only_b = model(input_ids=ids).logits
    assert not torch.allclose(only_a, only_b, atol=1e-4)
    assert torch.allclose(routed[[0, 3]], only_a[[0, 3]], atol=1e-6)
    assert torch.allclose(routed[[1, 2]], only_b[[1, 2]], atol=1e-6)
    assert torch.equal(routed, by_name)


def test_multitask_without_or_with_bad_task_ids_is_refused() -> None:
    model = _two_tasks("tiny-bert")
    model.set_active_adapters(MultiTask("a", "b"))
    model.active_head = "h"
    ids = torch.randint(5, 400, (2, 6))
    with pytest.raises(CompositionError, match="task_ids"):
        model(input_ids=ids)
    with pytest.raises(CompositionError, match="one task index"):
        model(input_ids=ids, task_ids=[0, 2])
    with pytest.raises(CompositionError, match="not in"):
        model(input_ids=ids, task_ids=["a", "c"])


def test_module_computes_the_reference_formula() -> None:
    """Σₖ wₖ (x Aᵀ S Bₖᵀ) / Σₖ wₖ · alpha / r with wₖ = exp(weights_k / sharpness)."""
    model = _two_tasks("tiny-bert")
    layer = model.bert.encoder.layer[0].attention.self.query
    module = layer.loras["a"]
    x = torch.randn(2, 5, 64)
    w = (module.weights / module.weights_sharpness).exp()
    s = torch.diag(module.task_specific.values)
    terms = torch.stack([x @ module.lora_A.t() @ s @ b.t() for b in module.lora_B])
    expected = (w[:, None, None, None] * terms).sum(0) / w.sum() * module.scaling
    got, _ = module(None, x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert tuple(module.lora_B.shape) == (3, 64, 8)


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2"])
def test_train_save_load_merge(tmp_path: Path, arch: str) -> None:
    model = _fresh(arch)
    model.add_adapter(
        "t", "mtl_lora[n_up_projection=2, task_specific_matrix_type=linear, init_weights=bert]"
    )
    model.add_causal_lm_head("t")
    model.train_adapter("t")
    ids = torch.randint(5, 400, (2, 9), generator=torch.Generator().manual_seed(2))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad.sign()
    model.eval()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.endswith("task_specific.values") for k in changed)
    assert [k for k in changed if not adapter_filter("t")(k) and not k.startswith("heads.")] == []

    model.save_adapter(tmp_path / "t", "t")
    keys = load_file(str(tmp_path / "t" / "adapter.safetensors"))
    assert any(k.endswith(".loras.t.weights") for k in keys)
    fresh = _fresh(arch)
    fresh.load_adapter(tmp_path / "t", set_active=True)
    fresh.eval()
    config = GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=None)
    config.pad_token_id = 0
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, fresh(input_ids=ids).logits
        assert torch.equal(a, b)
        g1 = model.generate(input_ids=ids[:1], generation_config=config)
        assert g1.tolist() == fresh.generate(input_ids=ids[:1], generation_config=config).tolist()
        fresh.merge_adapter("t")
        assert torch.allclose(fresh(input_ids=ids).logits, a, atol=1e-5)


def test_bad_mtl_config_names_the_field() -> None:
    from adapters_core.configuration import AdapterConfig

    with pytest.raises(AdapterConfigError, match="task_specific_matrix_type"):
        AdapterConfig.load("mtl_lora[task_specific_matrix_type=svd]")
    with pytest.raises(AdapterConfigError, match="n_up_projection"):
        AdapterConfig.load("mtl_lora[n_up_projection=0]")
