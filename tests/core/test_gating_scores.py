"""UniPELT's gating scores: the LoRA, prefix and bottleneck gates of every layer are reported by
``output_adapter_gating_scores=True``, one score per example, as the reference reports them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adapters_core import AutoAdapterModel


@pytest.mark.parametrize("arch", ["tiny-bert", "tiny-llama", "tiny-t5"])
def test_unipelt_reports_all_three_gates(interop_dir: Path, arch: str) -> None:
    torch.manual_seed(0)
    model = AutoAdapterModel.from_pretrained(str(interop_dir / "models" / arch)).eval()
    model.add_adapter("u", config="unipelt")
    model.set_active_adapters("u")
    # the bottleneck gate by hand: mean over the sequence of sigmoid(gate(adapter input))
    manual: dict[int, np.ndarray] = {}
    for key, module in model.get_adapter("u").items():
        if "output_adapter" not in module or not hasattr(module["output_adapter"], "gate"):
            continue
        gate = module["output_adapter"].gate

        def keep(mod: Any, args: tuple, idx: int = key) -> None:
            logits = torch.nn.functional.linear(args[0], mod.weight, mod.bias)
            manual[idx] = torch.sigmoid(logits).mean(dim=1).squeeze(-1).detach().numpy()

        gate.register_forward_pre_hook(keep)
    ids = torch.randint(5, 400, (2, 6), generator=torch.Generator().manual_seed(1))
    kwargs: dict[str, Any] = {"input_ids": ids, "output_adapter_gating_scores": True}
    if model.adapters_spec.is_encoder_decoder:
        kwargs["decoder_input_ids"] = ids[:, :4]
    with torch.no_grad():
        scores = model(**kwargs).adapter_gating_scores["u"]
    assert manual and set(scores) == set(manual)
    for layer, kinds in scores.items():
        assert {"selfattn_lora", "prefix", "output_adapter"} <= set(kinds), (layer, kinds)
        for kind, value in kinds.items():
            assert value.shape == (2,), (layer, kind)
            assert ((value > 0) & (value < 1)).all(), (layer, kind)
        np.testing.assert_allclose(kinds["output_adapter"], manual[layer], atol=1e-6)
