"""Fixtures for the adapters_core model tests: the interop fixtures in ../shared, tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
INTEROP = SHARED / "interop" / "adapters-1.3.0"

# The tiny random base models of the interop fixtures and their model types, in fixture order.
TINY_MODEL_TYPES = {
    "tiny-bert": "bert",
    "tiny-roberta": "roberta",
    "tiny-distilbert": "distilbert",
    "tiny-electra": "electra",
    "tiny-deberta-v2": "deberta-v2",
    "tiny-gpt2": "gpt2",
    "tiny-bart": "bart",
    "tiny-mbart": "mbart",
    "tiny-t5": "t5",
    "tiny-llama": "llama",
    "tiny-mistral": "mistral",
    "tiny-qwen2": "qwen2",
    "tiny-modernbert": "modernbert",
}


def tiny_bert_config(**overrides: Any) -> Any:
    from transformers import BertConfig

    kwargs = dict(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def tiny_roberta_config(**overrides: Any) -> Any:
    from transformers import RobertaConfig

    kwargs = dict(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=66,
        pad_token_id=1,
    )
    kwargs.update(overrides)
    return RobertaConfig(**kwargs)


def tiny_inputs(batch: int = 3, length: int = 12, seed: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, length - 3 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def add_task_head(model: Any, kind: str) -> None:
    """The head each kind of model trains with: causal LM, seq2seq LM, or classification."""
    if kind == "decoder":
        model.add_causal_lm_head("t")
    elif kind == "encoder-decoder":
        model.add_seq2seq_lm_head("t")
    else:
        model.add_classification_head("t", num_labels=2)


def task_batch(
    kind: str, padded: bool = False, mask_labels: bool = False
) -> dict[str, torch.Tensor]:
    """Two examples of ten tokens with labels for :func:`add_task_head`'s head; ``padded``: the
    second is padded after 7 tokens (``mask_labels``: its padding is not a decoder target)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 400, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if kind == "encoder-decoder":
        batch["labels"] = torch.randint(5, 400, (2, 6), generator=g)
    elif kind == "decoder":
        batch["labels"] = ids.masked_fill(mask == 0, -100) if mask_labels else ids
    else:
        batch["labels"] = torch.tensor([0, 1])
    return batch


def signed_step(model: Any, batch: dict[str, torch.Tensor]) -> set[str]:
    """One training step (a fixed-size step against the gradient's sign, so every trained
    weight moves), model left in eval mode; returns the state-dict keys that changed."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    model(**batch).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad.sign() * 1e-2
    model.eval()
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def load_expected(case_dir: Path) -> dict[str, Any]:
    return json.loads((case_dir / "expected.json").read_text())


@pytest.fixture
def tiny_bert_adapter_model() -> Any:
    from adapters_core import BertAdapterModel

    torch.manual_seed(0)
    model = BertAdapterModel(tiny_bert_config())
    model.eval()
    return model


@pytest.fixture
def tiny_roberta_adapter_model() -> Any:
    from adapters_core import RobertaAdapterModel

    torch.manual_seed(0)
    model = RobertaAdapterModel(tiny_roberta_config())
    model.eval()
    return model


@pytest.fixture(scope="session")
def interop_dir() -> Path:
    if not INTEROP.is_dir():
        pytest.skip(f"interop fixtures not found at {INTEROP}")
    return INTEROP
