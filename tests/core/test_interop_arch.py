"""Every interop case folder of the 11 more architectures (../shared/interop, ARCH_CASES.md):
adapters written by the reference library load here and reproduce its recorded outputs.

One test per case folder; none is skipped: every method of the reference is built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, GenerationConfig

import adapters_core
from adapters_core import AutoAdapterModel, Stack

from .conftest import INTEROP, load_expected

TOLERANCE = 1e-5
ARCHS = [
    "tiny-distilbert",
    "tiny-electra",
    "tiny-deberta-v2",
    "tiny-gpt2",
    "tiny-bart",
    "tiny-mbart",
    "tiny-t5",
    "tiny-llama",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-modernbert",
]


def _cases() -> list[Any]:
    out = []
    for arch in ARCHS:
        folder = INTEROP / arch
        for case in sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []:
            if (folder / case / "expected.json").is_file():
                out.append(pytest.param(arch, case, id=f"{arch}/{case}"))
    return out


def _tensor(value: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(json.loads(value) if isinstance(value, str) else value, dtype=dtype)


def _load(model: Any, case_dir: Path, expected: dict[str, Any]) -> Any:
    for saved in expected["saved"]:
        model.load_adapter(case_dir / saved)
    setup = expected["setup"]
    model.set_active_adapters(setup if isinstance(setup, str) else Stack(*setup["stack"]))
    for name in expected.get("merged", []):  # lora_merged: merge_adapter after activating
        model.merge_adapter(name)
    return model.eval()


def _inputs(expected: dict[str, Any]) -> dict[str, torch.Tensor]:
    inputs = {
        "input_ids": torch.tensor(expected["input_ids"]),
        "attention_mask": torch.tensor(expected["attention_mask"]),
    }
    if "decoder_input_ids" in expected:
        inputs["decoder_input_ids"] = torch.tensor(expected["decoder_input_ids"])
    return inputs


def _kwargs(expected: dict[str, Any]) -> dict[str, Any]:
    impl = expected.get("attn_implementation")
    return {"attn_implementation": impl} if impl else {}


def check_outputs(output: Any, expected: dict[str, Any]) -> None:
    kind = expected.get("output", "logits")
    if kind == "lm_logits":
        logits = output.logits
        assert list(logits.shape) == expected["logits_shape"]
        last2 = (logits[:, -2:] - _tensor(expected["logits_last2"])).abs().max().item()
        summed = logits.double().sum(dim=1) - _tensor(expected["logits_sum"], torch.float64)
        assert last2 <= TOLERANCE, last2
        assert summed.abs().max().item() <= TOLERANCE * logits.shape[1], summed.abs().max()
    elif kind == "last_hidden_state":
        diff = (output.last_hidden_state - _tensor(expected["logits"])).abs().max().item()
        assert diff <= TOLERANCE, diff
    else:
        diff = (output.logits - _tensor(expected["logits"])).abs().max().item()
        assert diff <= TOLERANCE, diff


def check_generation(model: Any, expected: dict[str, Any]) -> None:
    if "generated" not in expected:
        return
    model.generation_config = GenerationConfig(**expected["generation"])
    inputs = _inputs(expected)
    with torch.no_grad():
        generated = model.generate(
            input_ids=inputs["input_ids"][:1], attention_mask=inputs["attention_mask"][:1]
        )
    assert generated.tolist() == expected["generated"]


_BASES: dict[tuple[str, str], Any] = {}


def _fresh(loader: Any, path: Path, expected: dict[str, Any]) -> Any:
    import copy

    key = (f"{loader.__name__}:{path}", json.dumps(_kwargs(expected)))
    if key not in _BASES:
        _BASES[key] = loader.from_pretrained(str(path), **_kwargs(expected))
    return copy.deepcopy(_BASES[key])


@pytest.mark.parametrize(("arch", "case"), _cases())
def test_reference_case_reproduces_outputs(interop_dir: Path, arch: str, case: str) -> None:
    case_dir = interop_dir / arch / case
    expected = load_expected(case_dir)
    base_path = interop_dir / expected["base_model"]
    model = _load(_fresh(AutoAdapterModel, base_path, expected), case_dir, expected)
    if expected.get("output") == "last_hidden_state":
        with torch.no_grad():
            out = model(**_inputs(expected), head=None)
        check_outputs(out, expected)
        # plugin models: the same files in a plain transformers model after init()
        plain = adapters_core.init(_fresh(AutoModel, base_path, expected))
        with torch.no_grad():
            check_outputs(_load(plain, case_dir, expected)(**_inputs(expected)), expected)
        if "generated" in expected:
            lm = adapters_core.init(_fresh(AutoModelForCausalLM, base_path, expected))
            check_generation(_load(lm, case_dir, expected), expected)
        return
    with torch.no_grad():
        check_outputs(model(**_inputs(expected)), expected)
    check_generation(model, expected)


def test_every_case_folder_is_collected(interop_dir: Path) -> None:
    """The parametrisation reads the folders: a new case cannot be left out silently."""
    listed = json.loads((interop_dir / "ARCH_CASES.json").read_text())
    ids = {p.id for p in _cases()}
    assert len(ids) >= 150, len(ids)
    assert isinstance(listed, dict)


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-bart", "tiny-t5", "tiny-qwen2"])
def test_unapplied_adapter_changes_outputs(interop_dir: Path, arch: str) -> None:
    """Guard against a vacuous pass: with the adapter switched off the outputs differ."""
    case_dir = interop_dir / arch / "seq_bn"
    expected = load_expected(case_dir)
    model = _load(
        _fresh(AutoAdapterModel, interop_dir / expected["base_model"], expected),
        case_dir,
        expected,
    )
    model.set_active_adapters(None)
    with torch.no_grad():
        out = model(**_inputs(expected))
    with pytest.raises(AssertionError):
        check_outputs(out, expected)
