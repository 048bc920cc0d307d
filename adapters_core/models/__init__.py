"""Architecture tables (one short file per architecture) and the lookup generic code uses."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import AdapterError
from . import (
    bart,
    bert,
    deberta_v2,
    distilbert,
    electra,
    gpt2,
    llama,
    mbart,
    mistral,
    modernbert,
    qwen2,
    roberta,
    t5,
    xlm_roberta,
)
from .spec import ArchitectureSpec, ArchitectureSpecError, StaticHeadSpec

SPECS: dict[str, ArchitectureSpec] = {
    s.model_type: s
    for s in (
        bert.SPEC,
        roberta.SPEC,
        xlm_roberta.SPEC,
        distilbert.SPEC,
        electra.SPEC,
        deberta_v2.SPEC,
        gpt2.SPEC,
        bart.SPEC,
        mbart.SPEC,
        t5.SPEC,
        llama.SPEC,
        mistral.SPEC,
        qwen2.SPEC,
        modernbert.SPEC,
    )
}


def register_architecture(spec: ArchitectureSpec) -> None:
    """Add support for another architecture from its table."""
    SPECS[spec.model_type] = spec


def get_spec(model_type: str) -> ArchitectureSpec:
    spec = SPECS.get(model_type)
    if spec is None:
        raise AdapterError(
            f"Model type {model_type!r} is not supported by adapters_core "
            f"(supported: {', '.join(sorted(SPECS))})."
        )
    return spec


def resolve_path(root: Any, path: str) -> Any:
    """Follow a dotted attribute path (``"encoder.layer"``) from ``root``."""
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def import_class(ref: str) -> type:
    """``"transformers:BertModel"`` -> the class."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "SPECS",
    "ArchitectureSpec",
    "ArchitectureSpecError",
    "StaticHeadSpec",
    "get_spec",
    "import_class",
    "register_architecture",
    "resolve_path",
]
