"""Adapters saved by the reference library (adapters 1.3.0) load and reproduce its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adapters_core import AutoAdapterModel, Average, Fuse, Parallel, Stack

from .conftest import INTEROP, load_expected

BASES = ["tiny-bert", "tiny-roberta"]
SUPPORTED = [
    "seq_bn",
    "double_seq_bn",
    "par_bn",
    "seq_bn_inv",
    "seq_bn_safetensors",
    "stack",
    "fuse",
    "parallel",
    "average",
    "tagging_head",
    "multilabel_head",
    "qa_head",
    "lora",
    "ia3",
    "dora",
    "vera",
    "compacter",
    "prefix_tuning",
    "prompt_tuning",
    "loreft",
    "mam",
    "unipelt",
]
TOLERANCE = 1e-5

_BASE_MODELS: dict[str, Any] = {}


def _base_model(path: Path) -> Any:
    # loading from disk is the slow part; reuse a pristine copy per base model
    import copy

    key = str(path)
    if key not in _BASE_MODELS:
        _BASE_MODELS[key] = AutoAdapterModel.from_pretrained(key)
    return copy.deepcopy(_BASE_MODELS[key])


def _activate(model: Any, setup: Any) -> None:
    if isinstance(setup, str):
        model.set_active_adapters(setup)
    elif "stack" in setup:
        model.set_active_adapters(Stack(*setup["stack"]))
    elif "fuse" in setup:
        model.set_active_adapters(Fuse(*setup["fuse"]))
        model.active_head = setup["head"]
    elif "parallel" in setup:
        model.set_active_adapters(Parallel(*setup["parallel"]))
    elif "average" in setup:
        model.set_active_adapters(Average(*setup["average"], weights=setup["weights"]))
        model.active_head = setup["head"]
    else:
        raise AssertionError(f"unknown setup {setup}")


def load_case(case_dir: Path) -> tuple[Any, dict[str, Any]]:
    expected = load_expected(case_dir)
    model = _base_model(INTEROP / expected["base_model"])
    model.eval()
    for saved in expected["saved"]:
        if saved == "fusion":
            model.load_adapter_fusion(case_dir / saved)
        elif saved == "head":
            model.load_head(case_dir / saved)
        else:
            model.load_adapter(case_dir / saved)
    _activate(model, expected["setup"])
    return model, expected


def max_diff(output: Any, expected: Any) -> float:
    if isinstance(expected, dict):
        return max(
            (output.start_logits - torch.tensor(expected["start_logits"])).abs().max().item(),
            (output.end_logits - torch.tensor(expected["end_logits"])).abs().max().item(),
        )
    return (output.logits - torch.tensor(expected)).abs().max().item()


def run(model: Any, expected: dict[str, Any]) -> Any:
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(expected["input_ids"]),
            attention_mask=torch.tensor(expected["attention_mask"]),
        )


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("case", SUPPORTED)
def test_reference_adapter_reproduces_logits(interop_dir: Path, base: str, case: str) -> None:
    model, expected = load_case(interop_dir / base / case)
    assert max_diff(run(model, expected), expected["logits"]) <= TOLERANCE


@pytest.mark.parametrize("base", BASES)
def test_unapplied_adapter_changes_logits(interop_dir: Path, base: str) -> None:
    """Guard against a vacuous pass: without the adapter active the logits differ."""
    model, expected = load_case(interop_dir / base / "seq_bn")
    model.set_active_adapters(None)
    out = run(model, {**expected})
    # the head still runs (it stays active), but without the adapter
    assert max_diff(out, expected["logits"]) > 1e-3
