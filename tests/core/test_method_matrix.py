"""Every (method, architecture) pair of the support table that no other round-trip test covers:
add, train a step (only adapter and head weights change), save as safetensors, load into a fresh
model: identical outputs, and identical greedy generation for decoders and encoder-decoders.

The pairs come from the code (``support_matrix``) minus the case lists of the method test files,
so a method or architecture added later lands here until its own test covers it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from adapters_core import AutoAdapterModel
from adapters_core.models import SPECS
from adapters_core.support import support_matrix
from adapters_core.weights import adapter_filter

from . import test_arch_roundtrip, test_prefix_tuning, test_prompt_reft
from .conftest import add_task_head, signed_step
from .test_lora_arch import CONFIGS as LORA_CONFIGS
from .test_models import _xlmr_config
from .test_prompt_reft import _batch, _generation_config

# the tiny model behind each model type; XLM-R has no interop model, it is built from a config
TINY = {model_type: arch for arch, model_type in test_prompt_reft.TINY_MODEL_TYPES.items()}
TINY["xlm-roberta"] = "xlm-roberta"


def _name(config: str) -> str:
    return config.split("[", 1)[0]


def _covered() -> set[tuple[str, str]]:
    """(tiny model, config name) pairs another file already trains, reloads and generates with."""
    covered = {
        (a, _name(m)) for a in test_arch_roundtrip.ARCHS for m in test_arch_roundtrip.METHODS
    }
    for cases in (test_prefix_tuning.CASES, test_prompt_reft.CASES):
        for case in cases:
            arch, method = case.values if hasattr(case, "values") else case
            name = "prefix_tuning_flat" if "flat=True" in method else _name(method)
            covered.add((arch, name))
    covered |= {("tiny-llama", "mtl_lora"), ("tiny-gpt2", "mtl_lora")}  # test_mtl_lora.py
    # test_lora_arch.py trains and reloads the LoRA family everywhere but generates nothing
    encoders = [
        a for a, t in test_prompt_reft.TINY_MODEL_TYPES.items() if SPECS[t].kind == "encoder"
    ]
    covered |= {(a, m) for a in encoders for m in LORA_CONFIGS}
    return covered


# small settings keep the tiny models fast; compacter's phm_dim 4 must divide the bottleneck
CONFIGS: dict[str, str] = {
    **LORA_CONFIGS,
    "compacter": "compacter[reduction_factor=8]",
    "compacter++": "compacter++[reduction_factor=8]",
    "mtl_lora": "mtl_lora[n_up_projection=2, init_weights=bert]",
    "prefix_tuning": test_prefix_tuning.METHODS[0],
    "prefix_tuning_flat": test_prefix_tuning.FLAT,
}


def _kind(arch: str) -> str:
    return SPECS[test_prompt_reft.TINY_MODEL_TYPES.get(arch, arch)].kind


def _pairs() -> list[tuple[str, str]]:
    covered = _covered()
    pairs = []
    for model_type, row in support_matrix().items():
        names = [n for n, reason in row.items() if reason is None]
        if "prefix_tuning" in names:  # the flat generator is a second code path of the method
            names.append("prefix_tuning_flat")
        pairs += [(TINY[model_type], n) for n in names if (TINY[model_type], n) not in covered]
    return pairs


PAIRS = _pairs()


def _cases() -> list[Any]:
    """Each method stays fast on its first architecture of each kind; the rest are marked slow."""
    seen: set[tuple[str, str]] = set()
    cases = []
    for arch, name in PAIRS:
        first = (name, _kind(arch)) not in seen
        seen.add((name, _kind(arch)))
        cases.append(pytest.param(arch, name, marks=() if first else pytest.mark.slow))
    return cases


_XLMR: list[Any] = []


def _fresh(arch: str) -> Any:
    if arch != "xlm-roberta":
        return test_prompt_reft._fresh(arch)
    if not _XLMR:
        torch.manual_seed(0)
        _XLMR.append(AutoAdapterModel.from_config(_xlmr_config()))
    torch.manual_seed(0)
    return copy.deepcopy(_XLMR[0])


def test_every_supported_pair_is_covered_somewhere() -> None:
    """The complement is not empty by accident: it covers what the other files leave out."""
    assert ("xlm-roberta", "seq_bn") in PAIRS
    assert ("tiny-llama", "noreft") in PAIRS and ("tiny-bert", "noreft") not in PAIRS
    assert ("tiny-qwen2", "lora") in PAIRS and ("tiny-bert", "lora") not in PAIRS
    assert len(PAIRS) == len(set(PAIRS))


@pytest.mark.parametrize(("arch", "name"), _cases())
def test_train_save_load_roundtrip(tmp_path: Path, arch: str, name: str) -> None:
    kind = _kind(arch)
    model = _fresh(arch)
    model.add_adapter("t", CONFIGS.get(name, name))
    add_task_head(model, kind)
    model.train_adapter("t")
    batch = _batch(kind)
    changed = signed_step(model, batch)
    assert any(adapter_filter("t")(k) for k in changed), "the adapter did not train"
    frozen = [k for k in changed if not adapter_filter("t")(k) and not k.startswith("heads.t.")]
    assert frozen == []

    model.save_adapter(tmp_path / "t", "t")
    assert (tmp_path / "t" / "adapter.safetensors").is_file()
    assert not list((tmp_path / "t").glob("*.bin"))
    fresh = _fresh(arch)
    fresh.load_adapter(tmp_path / "t", set_active=True)
    fresh.eval()
    inputs = test_prefix_tuning._inputs(kind, batch)
    with torch.no_grad():
        a, b = model(**inputs).logits, fresh(**inputs).logits
        model.set_active_adapters(None)
        plain = model(**inputs).logits
        model.set_active_adapters("t")
    assert torch.equal(a, b)
    assert not torch.allclose(a, plain), "the adapter has no effect"
    if kind == "encoder":
        return
    config = _generation_config(model)
    prompt = inputs["input_ids"][:1]
    with torch.no_grad():
        g1 = model.generate(input_ids=prompt, generation_config=config)
        g2 = fresh.generate(input_ids=prompt, generation_config=config)
    assert g1.tolist() == g2.tolist()
