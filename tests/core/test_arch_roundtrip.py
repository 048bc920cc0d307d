"""Per architecture, on its tiny random model: add each bottleneck method (Compacter included), train a step (only
adapter and head weights change), save (safetensors), load into a fresh model: identical
outputs; decoders and encoder-decoders generate identical tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from adapters_core import AutoAdapterModel
from adapters_core.models import SPECS
from adapters_core.weights import adapter_filter

from .conftest import INTEROP, TINY_MODEL_TYPES, add_task_head, task_batch

# the eleven newer architectures (BERT and RoBERTa: test_roundtrip.py)
ARCHS = {k: v for k, v in TINY_MODEL_TYPES.items() if k not in ("tiny-bert", "tiny-roberta")}
# Compacter: reduction_factor 8 so that phm_dim 4 divides the tiny models' bottleneck (64 / 8)
METHODS = [
    "seq_bn",
    "double_seq_bn",
    "par_bn",
    "compacter[reduction_factor=8]",
    "compacter++[reduction_factor=8]",
]


def _fresh(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch))


def _batch(kind: str) -> dict[str, torch.Tensor]:
    return task_batch(kind)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_train_save_load_roundtrip(
    interop_dir: Path, tmp_path: Path, arch: str, method: str
) -> None:
    kind = SPECS[ARCHS[arch]].kind
    model = _fresh(arch)
    model.add_adapter("t", method)
    add_task_head(model, kind)
    model.train_adapter("t")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = _batch(kind)
    model.train()
    loss = model(**batch).loss
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad.sign() * 1e-2
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, "the step changed nothing"
    frozen = [k for k in changed if not adapter_filter("t")(k) and not k.startswith("heads.t.")]
    assert frozen == []

    model.eval()
    model.save_adapter(tmp_path / "t", "t")
    assert (tmp_path / "t" / "adapter.safetensors").is_file()
    fresh = _fresh(arch)
    fresh.load_adapter(tmp_path / "t", set_active=True)
    fresh.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if kind == "encoder-decoder":
        inputs["decoder_input_ids"] = batch["labels"]
    with torch.no_grad():
        a, b = model(**inputs).logits, fresh(**inputs).logits
    assert torch.equal(a, b)
    if kind != "encoder":
        config = GenerationConfig(max_new_tokens=5, do_sample=False, eos_token_id=None)
        config.pad_token_id = 0
        config.decoder_start_token_id = getattr(model.config, "decoder_start_token_id", None)
        prompt = inputs["input_ids"][:1]
        with torch.no_grad():
            g1 = model.generate(input_ids=prompt, generation_config=config)
            g2 = fresh.generate(input_ids=prompt, generation_config=config)
        assert g1.tolist() == g2.tolist()
