"""Where prefix tuning's keys and values enter a transformer's attention.

transformers 5.x models call ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`` (or the
modeling file's ``eager_attention_forward``) with keys and values that are already rotated
(RoPE) and taken from the KV cache. A model with prefix tuning runs under
``adapters_core_prefix:<implementation>``: the same function, after the attention module's
:class:`~adapters_core.methods.prefix_tuning.PrefixTuningLayer` has put the prefixes in front
of keys and values, extended the mask by always-visible prefix columns and (T5) the position
bias by the reference's columns. Modules without a prefix pass straight through; the mask
function of the wrapped implementation is registered under the new name.

DeBERTa-v2 computes attention in its own module (relative c2p/p2c terms); its self-attention
class gets a subclass doing the same with the prefixes (relative terms zero for prefix keys,
as in the reference).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..context import ForwardContext
from ..errors import AdapterConfigError
from .base import ModelHandle

PREFIX = "adapters_core_prefix:"
WRAPPABLE = ("eager", "sdpa", "adapters_core_sdpa")


def _inner(name: str, module: nn.Module) -> Callable[..., Any]:
    if name == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward  # type: ignore[attr-defined]
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[name]


def _make_wrapper(inner_name: str) -> Callable[..., Any]:
    def attention_with_prefixes(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> Any:
        layer = module._modules.get("prefix_tuning")
        if layer is not None:
            out = layer.extend(key, value)
            if out is not None:
                q_len, kv_len = query.shape[2], key.shape[2]
                key, value, valid = out
                causal = inner_name != "eager" and bool(
                    kwargs.get("is_causal")
                    if kwargs.get("is_causal") is not None
                    else getattr(module, "is_causal", True)
                )
                attention_mask = extend_mask(
                    attention_mask, valid, q_len, kv_len, causal, query.dtype, inner_name == "eager"
                )
                if kwargs.get("position_bias") is not None:
                    kwargs["position_bias"] = extend_position_bias(
                        module,
                        layer.location_key,
                        kwargs["position_bias"],
                        valid.shape[1],
                        q_len,
                        kv_len,
                    )
        return _inner(inner_name, module)(module, query, key, value, attention_mask, **kwargs)

    return attention_with_prefixes


def extend_mask(
    mask: torch.Tensor | None,
    valid: torch.Tensor,
    q_len: int,
    kv_len: int,
    causal: bool,
    dtype: torch.dtype,
    additive: bool,
) -> torch.Tensor | None:
    """The attention mask with prefix columns in front: visible from every query where the
    prefix position is real (``valid``), as the reference's eager path."""
    batch, prefix = valid.shape
    device = valid.device
    if mask is None:
        if not causal and bool(valid.all()):
            return None
        allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
        if causal and q_len > 1:
            allowed = allowed.tril(kv_len - q_len)
        allowed = allowed[None, None]
        if additive:
            mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
            mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)
        else:
            mask = allowed
    rows = mask.shape[-2]
    if mask.dtype == torch.bool:
        front = valid[:, None, None, :].expand(batch, 1, rows, prefix)
    else:
        front = torch.zeros(batch, 1, rows, prefix, dtype=mask.dtype, device=mask.device)
        front = front.masked_fill(~valid[:, None, None, :], torch.finfo(mask.dtype).min)
    if mask.dim() == 2:  # (batch, keys) padding masks
        return torch.cat([front[:, 0, 0], mask.expand(batch, -1)], dim=-1)
    full_batch = max(mask.shape[0], batch)
    heads = mask.shape[1]
    mask = mask.expand(full_batch, heads, rows, mask.shape[-1])
    front = front.to(mask.device).expand(full_batch, heads, rows, prefix)
    return torch.cat([front, mask], dim=-1)


def extend_position_bias(
    module: nn.Module,
    location_key: str,
    bias: torch.Tensor,
    prefix: int,
    q_len: int,
    kv_len: int,
) -> torch.Tensor:
    """T5: the relative position bias over prefix + keys, as the reference computes it (the
    prefix takes the first positions, keys follow; computed by the layer with the bias table,
    reused by the later layers of the stack; zero where there is no table)."""
    ctx = ForwardContext.get_context()
    cache = ctx.values.setdefault("t5_prefix_bias", {}) if ctx is not None else {}
    key = (location_key, prefix, q_len, kv_len)
    if getattr(module, "has_relative_attention_bias", False):
        cache[key] = module.compute_bias(
            q_len, prefix + kv_len, device=bias.device, past_seen_tokens=kv_len - q_len
        ).to(bias.dtype)
    if key in cache:
        return cache[key]
    zeros = bias.new_zeros(*bias.shape[:-1], prefix)
    return torch.cat([zeros, bias], dim=-1)


def _register(inner_name: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = PREFIX + inner_name
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _make_wrapper(inner_name))
    if name not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        ALL_MASK_ATTENTION_FUNCTIONS.register(
            name, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[inner_name]
        )
    return name


def _configs(model: ModelHandle) -> list[Any]:
    seen: dict[int, Any] = {}
    for module in model.base_model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


def check_attention(model: ModelHandle) -> None:
    """Refuse attention implementations the prefixes cannot enter (flash, flex...)."""
    if model.spec.model_type == "deberta-v2":
        return
    for config in _configs(model):
        impl = config._attn_implementation or "eager"
        if impl.startswith(PREFIX) or impl in WRAPPABLE:
            continue
        raise AdapterConfigError(
            f"Prefix tuning needs eager or sdpa attention; this model runs {impl!r} "
            "(load it with attn_implementation='sdpa' or 'eager')."
        )


def wrap_attention(model: ModelHandle) -> None:
    """Route the model's attention through the prefix wrapper (idempotent)."""
    if model.spec.model_type == "deberta-v2":
        _swap_deberta(model)
        return
    for config in _configs(model):
        impl = config._attn_implementation or "eager"
        if not impl.startswith(PREFIX):
            config._attn_implementation = _register(impl)


# --- DeBERTa-v2 -------------------------------------------------------------------------------


def _swap_deberta(model: ModelHandle) -> None:
    from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention

    for module in model.base_model.modules():
        if type(module) is DisentangledSelfAttention:
            module.__class__ = deberta_attention_class()


_DEBERTA: list[type] = []


def deberta_attention_class() -> type:
    """The DeBERTa-v2 self-attention subclass (built on first use: transformers import)."""
    if not _DEBERTA:
        _DEBERTA.append(_deberta_class())
    return _DEBERTA[0]


def _deberta_class() -> type:
    from transformers.models.deberta_v2.modeling_deberta_v2 import (
        DisentangledSelfAttention,
        scaled_size_sqrt,
    )

    class DebertaV2SelfAttentionWithPrefixes(DisentangledSelfAttention):
        """DeBERTa-v2's disentangled attention with prefix keys/values in front."""

        def forward(
            self,
            hidden_states: torch.Tensor,
            attention_mask: torch.Tensor,
            output_attentions: bool = False,
            query_states: torch.Tensor | None = None,
            relative_pos: torch.Tensor | None = None,
            rel_embeddings: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor | None]:
            layer = self._modules.get("prefix_tuning")
            heads = self.num_attention_heads
            batch, length = hidden_states.shape[:2]
            if query_states is None:
                query_states = hidden_states
            query = self.transpose_for_scores(self.query_proj(query_states), heads)
            key = self.transpose_for_scores(self.key_proj(hidden_states), heads)
            value = self.transpose_for_scores(self.value_proj(hidden_states), heads)
            out = None
            if layer is not None:
                split = (batch, heads, length, -1)
                out = layer.extend(key.view(split), value.view(split))
            if out is None:
                all_keys, all_values, prefix = key, value, 0
            else:
                k, v, valid = out
                prefix = valid.shape[1]
                all_keys = k.reshape(batch * heads, prefix + length, -1)
                all_values = v.reshape(batch * heads, prefix + length, -1)
            scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
            scale = scaled_size_sqrt(query, scale_factor)
            scores = torch.bmm(query, all_keys.transpose(-1, -2) / scale.to(dtype=query.dtype))
            if self.relative_attention:
                rel_embeddings = self.pos_dropout(rel_embeddings)
                rel_att = self.disentangled_attention_bias(
                    query, key, relative_pos, rel_embeddings, scale_factor
                )
                if rel_att is not None:
                    if prefix:
                        rel_att = torch.cat(
                            [rel_att.new_zeros(*rel_att.shape[:-1], prefix), rel_att], -1
                        )
                    scores = scores + rel_att
            scores = scores.view(-1, heads, scores.size(-2), scores.size(-1))
            mask = attention_mask.bool()
            if prefix:
                mask = extend_mask(mask, valid, length, length, False, scores.dtype, False)
            scores = scores.masked_fill(~mask, torch.finfo(query.dtype).min)
            probs = self.dropout(nn.functional.softmax(scores, dim=-1))
            context = torch.bmm(probs.view(-1, probs.size(-2), probs.size(-1)), all_values)
            context = context.view(-1, heads, context.size(-2), context.size(-1)).permute(
                0, 2, 1, 3
            )
            context = context.contiguous().view(*context.shape[:2], -1)
            return (context, probs if output_attentions else None)

    return DebertaV2SelfAttentionWithPrefixes
