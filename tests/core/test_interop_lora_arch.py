"""LoRA-family adapters saved by the reference library (adapters 1.3.0) on the 11 newer tiny
architectures reproduce its recorded outputs (and greedy generations) within 1e-5."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import adapters_core
from adapters_core import AutoAdapterModel

from .conftest import INTEROP

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
CASES = ["lora", "ia3", "dora", "vera", "lora_merged"]
TOLERANCE = 1e-5


def _cases() -> list[Any]:
    out = []
    for arch in ARCHS:
        for case in CASES:
            folder = INTEROP / arch / case
            if (folder / "expected.json").is_file():
                out.append(pytest.param(arch, case, id=f"{arch}-{case}"))
    return out


def _load(case_dir: Path, expected: dict[str, Any], for_generation: bool = False) -> Any:
    base = str(INTEROP / expected["base_model"])
    kwargs = {}
    if expected.get("attn_implementation"):
        kwargs["attn_implementation"] = expected["attn_implementation"]
    plugin = expected.get("output") == "last_hidden_state"
    if plugin:
        from transformers import AutoModel, AutoModelForCausalLM

        cls = AutoModelForCausalLM if for_generation else AutoModel
        model = adapters_core.init(cls.from_pretrained(base, **kwargs))
    else:
        model = AutoAdapterModel.from_pretrained(base, **kwargs)
    model.eval()
    for saved in expected["saved"]:
        model.load_adapter(case_dir / saved, with_head=not plugin)
    model.set_active_adapters(expected["setup"])
    for name in expected.get("merged", []):
        model.merge_adapter(name)
    return model


def _inputs(expected: dict[str, Any]) -> dict[str, torch.Tensor]:
    inputs = {
        "input_ids": torch.tensor(expected["input_ids"]),
        "attention_mask": torch.tensor(expected["attention_mask"]),
    }
    if "decoder_input_ids" in expected:
        inputs["decoder_input_ids"] = torch.tensor(expected["decoder_input_ids"])
    return inputs


def _as_tensor(value: Any) -> torch.Tensor:
    return torch.tensor(json.loads(value) if isinstance(value, str) else value)


def output_diff(model: Any, expected: dict[str, Any]) -> float:
    with torch.no_grad():
        out = model(**_inputs(expected))
    kind = expected.get("output", "logits")
    if kind == "last_hidden_state":
        return (out.last_hidden_state - _as_tensor(expected["logits"])).abs().max().item()
    logits = out.logits
    if kind == "logits":
        return (logits - _as_tensor(expected["logits"])).abs().max().item()
    assert list(logits.shape) == expected["logits_shape"]
    last2 = (logits[:, -2:] - _as_tensor(expected["logits_last2"])).abs().max().item()
    summed = logits.double().sum(dim=1)
    total = (summed - _as_tensor(expected["logits_sum"]).double()).abs().max().item()
    # a sum over 12 positions carries the float32 rounding of each: allow it per position
    return max(last2, total / logits.shape[1])


@pytest.mark.parametrize(("arch", "case"), _cases())
def test_reference_lora_family_reproduces_outputs(arch: str, case: str) -> None:
    case_dir = INTEROP / arch / case
    expected = json.loads((case_dir / "expected.json").read_text())
    model = _load(case_dir, expected)
    assert output_diff(model, expected) <= TOLERANCE


@pytest.mark.parametrize(("arch", "case"), _cases())
def test_reference_lora_family_generates_recorded_tokens(arch: str, case: str) -> None:
    case_dir = INTEROP / arch / case
    expected = json.loads((case_dir / "expected.json").read_text())
    if "generated" not in expected:
        pytest.skip("an encoder: nothing to generate")
    model = _load(case_dir, expected, for_generation="generation_model" in expected)
    prompt = torch.tensor(expected["input_ids"][:1])
    config = dict(expected["generation"])
    with torch.no_grad():
        generated = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), **config
        )
    assert generated.tolist() == expected["generated"]
