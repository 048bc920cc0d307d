"""Training kernels for the CPU: the same computation in distribution, fewer passes over memory.

On the CPU, PyTorch's dropout draws its keep-mask with ``bernoulli_`` (about three times the
cost of ``torch.rand`` for the same number of draws) and SDPA with ``dropout_p > 0`` falls back
to its math path (scaled scores, a ``_safe_softmax`` that scans for fully masked rows, then that
slow dropout). Adapter training runs both in every frozen layer, so they are a large share of a
step. Here the keep-mask is ``rand >= p``: a 24-bit uniform float against ``p``, as PyTorch's
own CPU Bernoulli draws it, so each element is still kept, independently, with probability
``1 - p`` (to 2^-24) and scaled by ``1 / (1 - p)``. The mask is one ``torch.rand`` away from the
default generator, so ``torch.manual_seed`` still fixes it.

Everything else (inference, other devices, other dtypes) goes to PyTorch's or transformers' own
implementation unchanged. :func:`attach` puts both kernels into a model; the attention kernel
only for the model types it is tested on (:data:`ATTENTION_MODEL_TYPES`). Frozen Llama-style
decoders (no dropout) get their own kernels: :mod:`adapters_core.kernels_decoder`.

Turning them off: ``adapters_core.init(model, cpu_kernels=False)``, or the environment variable
``ADAPTERS_CORE_CPU_KERNELS=0`` (read when adapter support is added to a model).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.integrations.sdpa_attention import (
    sdpa_attention_forward as _transformers_sdpa,
)

ATTENTION_NAME = "adapters_core_sdpa"
ENV_SWITCH = "ADAPTERS_CORE_CPU_KERNELS"
# model types whose attention path is tested against transformers' SDPA (tests/core/test_kernels.py)
ATTENTION_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")


def enabled(cpu_kernels: bool | None = None) -> bool:
    """Whether to attach the kernels: the explicit choice, else the environment switch."""
    if cpu_kernels is not None:
        return bool(cpu_kernels)
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _uses_fast_path(x: torch.Tensor, p: float, training: bool) -> bool:
    return (
        training
        and 0.0 < p < 1.0
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
    )


def _keep_mask(x: torch.Tensor, p: float, scale: float) -> torch.Tensor:
    """``scale`` where the element is kept (probability ``1 - p``), else 0; same shape as ``x``."""
    return torch.rand(x.shape, dtype=x.dtype).ge_(p).mul_(scale)


class _DropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = _keep_mask(x, p, 1.0 / (1.0 - p))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` (not in place) with the cheaper CPU mask; elsewhere ``F.dropout`` itself."""
    if not _uses_fast_path(x, p, training):
        return F.dropout(x, p, training)
    return _DropoutFunction.apply(x, p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` running :func:`dropout`; a drop-in for it (same ``p``, same state)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.dropout(input, self.p, self.training, inplace=True)
        return dropout(input, self.p, self.training)


def sdpa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with a cheaper training path on the CPU.

    Taken only for what that path covers (bidirectional attention, one key/value head per query
    head, an additive float or a boolean mask, or none); everything else, inference included,
    calls transformers' ``sdpa_attention_forward``.
    """
    if (
        _uses_fast_path(query, dropout, module.training)
        and not is_causal
        and not getattr(module, "is_causal", False)
        and getattr(module, "num_key_value_groups", 1) == 1
        and kwargs.get("position_bias") is None
        and query.shape[:2] == key.shape[:2]
        and (attention_mask is None or attention_mask.dtype in (torch.bool, query.dtype))
    ):
        return _attention_with_dropout(query, key, value, attention_mask, dropout, scaling), None
    return _transformers_sdpa(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=dropout,
        scaling=scaling,
        is_causal=is_causal,
        **kwargs,
    )


def _attention_with_dropout(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    p: float,
    scaling: float | None,
) -> torch.Tensor:
    """softmax(q k^T * scaling + mask), dropped out, times v; returns (batch, seq, heads, dim)."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    batch, heads, length, dim = query.shape
    # 3-D operands for bmm (the copies matmul would make anyway); both scales ride on the GEMMs'
    # alpha instead of extra passes over q and v
    q = query.reshape(batch * heads, length, dim)
    k = key.reshape(batch * heads, key.shape[2], dim)
    v = value.reshape(batch * heads, value.shape[2], value.shape[3])
    unused = q.new_zeros(())
    scores = torch.baddbmm(unused, q, k.transpose(1, 2), beta=0.0, alpha=scaling)
    scores = scores.view(batch, heads, length, k.shape[1])
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        # a query row with every key masked out gives zeros, as SDPA's math path does
        probs = probs.nan_to_num(0.0)
    keep = torch.rand(probs.shape, dtype=probs.dtype).ge_(p)
    dropped = (probs * keep).view(batch * heads, length, k.shape[1])
    output = torch.baddbmm(unused, dropped, v, beta=0.0, alpha=1.0 / (1.0 - p))
    return output.view(batch, heads, length, v.shape[2]).transpose(1, 2).contiguous()


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if ATTENTION_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION_NAME, sdpa_attention_forward)
    if ATTENTION_NAME not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)


def attach(model: nn.Module) -> None:
    """Use :class:`Dropout` for the model's ``nn.Dropout`` modules and, where the model runs
    transformers' SDPA attention, :func:`sdpa_attention_forward` (same masks, same results);
    for Llama-style decoders, the fused RMSNorm and rotary paths of :mod:`.kernels_decoder`."""
    from . import kernels_decoder

    kernels_decoder.attach(model)
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = Dropout
    config = getattr(model, "config", None)
    if (
        config is not None
        and getattr(config, "model_type", None) in ATTENTION_MODEL_TYPES
        and getattr(config, "_attn_implementation", None) == "sdpa"
    ):
        _register_attention()
        config._attn_implementation = ATTENTION_NAME
