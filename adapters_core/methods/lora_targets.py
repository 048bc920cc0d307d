"""Where the LoRA family goes in a model: the linear layers the architecture table names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .lora import LinearTarget

if TYPE_CHECKING:
    from ..models.spec import ArchitectureSpec


def targets_from_spec(base_model: nn.Module, spec: ArchitectureSpec) -> list[LinearTarget]:
    """Self-attention q/k/v, the intermediate and the output projection of every layer."""
    from ..models import resolve_path

    out: list[LinearTarget] = []
    for idx, _ in enumerate(resolve_path(base_model, spec.layers)):
        prefix = f"{spec.layers}.{idx}"
        attn = f"{prefix}.{spec.self_attention}"
        for key, attr in (("q", spec.query), ("k", spec.key), ("v", spec.value)):
            out.append(LinearTarget(idx, f"{attn}.{attr}", "selfattn", key))
        out.append(LinearTarget(idx, f"{prefix}.{spec.intermediate}", "intermediate"))
        out.append(LinearTarget(idx, f"{prefix}.{spec.ffn_output}.{spec.output_dense}", "output"))
    return out
