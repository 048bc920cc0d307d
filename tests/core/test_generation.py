"""Decoders generate what greedy decoding by full forward passes gives (the reference's Llama
and Mistral AdapterModels do not: their generate() drops the prompt)."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from adapters_core import AutoAdapterModel

from .conftest import INTEROP


def _greedy_by_full_forward(model: object, ids: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids).logits  # type: ignore[operator]
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-mistral", "tiny-gpt2"])
def test_generate_equals_greedy_full_forward(interop_dir: object, arch: str) -> None:
    model = AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch)).eval()
    model.load_adapter(INTEROP / arch / "seq_bn" / "a", set_active=True)
    model.generation_config = GenerationConfig(
        max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    prompt = torch.tensor([[89, 342, 48, 451, 411, 374, 280, 400]])
    with torch.no_grad():
        generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt))
    expected = _greedy_by_full_forward(model, prompt, 8)
    assert generated[0, : prompt.shape[1]].tolist() == prompt[0].tolist()  # prompt kept
    assert generated.tolist() == expected.tolist()
    # the adapter takes part: without it the continuation differs
    model.set_active_adapters(None)
    assert _greedy_by_full_forward(model, prompt, 8).tolist() != expected.tolist()
