"""The shape of an architecture table: where generic code finds each part of a model.

Paths are dotted attribute paths. Layer-relative paths start at one element of ``layers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StaticHeadSpec:
    """How a task-specific HF class's head maps onto a flexible head (static -> flex)."""

    head_config: dict[str, Any]
    # static weight key prefix -> flex head Sequential index, in order
    layers: dict[str, int]


@dataclass(frozen=True)
class ArchitectureSpec:
    model_type: str
    base_model_prefix: str
    base_model_class: str  # "transformers:BertModel"
    embeddings: str  # module whose output gets the invertible adapter
    layers: str  # nn.ModuleList of transformer layers
    # residual sub-blocks: module with forward(hidden_states, input_tensor) = LN(dropout(dense(h)) + x)
    attention_output: str
    ffn_output: str
    output_dense: str = "dense"
    output_dropout: str = "dropout"
    output_layer_norm: str = "LayerNorm"
    # projections later methods (LoRA, prefix tuning) hook into
    self_attention: str = "attention.self"
    query: str = "query"
    key: str = "key"
    value: str = "value"
    intermediate: str = "intermediate.dense"
    hidden_size_attr: str = "hidden_size"
    has_pooler: bool = True
    head_types: tuple[str, ...] = (
        "classification",
        "multilabel_classification",
        "tagging",
        "multiple_choice",
        "question_answering",
        "dependency_parsing",
        "masked_lm",
        "causal_lm",
    )
    static_heads: dict[str, StaticHeadSpec] = field(default_factory=dict)
