"""Fusion and composition blocks run on the hooked layers of the new architectures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adapters_core import (
    AutoAdapterModel,
    Average,
    BatchSplit,
    CompositionError,
    Fuse,
    Parallel,
    Split,
    Stack,
)

from .conftest import INTEROP

ARCHS = ["tiny-distilbert", "tiny-gpt2", "tiny-bart", "tiny-t5", "tiny-llama", "tiny-qwen2"]


def _model(arch: str) -> Any:
    torch.manual_seed(0)
    model = AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch)).eval()
    for name in ("a", "b"):
        model.add_adapter(name, "seq_bn[init_weights=houlsby]")
        with torch.no_grad():  # make the adapters matter
            for p in model.get_adapter(name)[0]["output_adapter"].parameters():
                p.normal_(0.0, 0.3)
    model.add_adapter_fusion(Fuse("a", "b"))
    return model


def _run(model: Any, setup: Any) -> torch.Tensor:
    ids = torch.randint(5, 400, (4, 6), generator=torch.Generator().manual_seed(1))
    inputs: dict[str, Any] = {"input_ids": ids}
    if model.adapters_spec.is_encoder_decoder:
        inputs["decoder_input_ids"] = ids[:, :4]
    model.set_active_adapters(setup)
    with torch.no_grad():
        out = model(**inputs)
    return out.last_hidden_state


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_run_and_differ(interop_dir: Path, arch: str) -> None:
    model = _model(arch)
    single = _run(model, "a")
    outs = {
        "stack": _run(model, Stack("a", "b")),
        "fuse": _run(model, Fuse("a", "b")),
        "average": _run(model, Average("a", "b", weights=[0.3, 0.7])),
        "batch_split": _run(model, BatchSplit("a", "b", batch_sizes=[2, 2])),
    }
    for name, out in outs.items():
        assert out.shape == single.shape, name
        assert not torch.allclose(out, single, atol=1e-6), name
    # BatchSplit: the first half is exactly adapter a's
    assert torch.allclose(outs["batch_split"][:2], single[:2], atol=1e-6)
    if not model.adapters_spec.is_encoder_decoder:
        split = _run(model, Split("a", "b", splits=[3, 3]))
        assert split.shape == single.shape


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama", "tiny-bart"])
def test_parallel_runs_each_adapter_on_its_copy(interop_dir: Path, arch: str) -> None:
    model = _model(arch)
    a, b = _run(model, "a"), _run(model, "b")
    both = _run(model, Parallel("a", "b"))
    assert torch.allclose(both[:4], a, atol=1e-5) and torch.allclose(both[4:], b, atol=1e-5)


def test_parallel_is_refused_where_the_reference_refuses_it(interop_dir: Path) -> None:
    model = _model("tiny-qwen2")
    with pytest.raises(CompositionError, match="Parallel"):
        model.set_active_adapters(Parallel("a", "b"))
