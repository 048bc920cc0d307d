"""Training kernels for frozen Llama-style decoders on the CPU: RMSNorm and rotary embeddings.

Training adapters on a frozen decoder still runs the backward pass through every frozen layer,
and autograd replays transformers' formulas op by op: ``LlamaRMSNorm`` is pow, mean, add,
rsqrt, mul, mul (about ten backward kernels and their saved tensors), and the rotary embedding's
``rotate_half`` slices, negates and concatenates, so its backward allocates zeros for each slice
and copies into them. Here both are one ``torch.autograd.Function`` each, with the analytic
backward:

- RMSNorm: ``y = w * x * r`` with ``r = rsqrt(mean(x^2) + eps)``; ``dx = r * (g*w - x * r^2 *
  mean(g*w*x))`` (and ``dw = sum(g * x * r)`` when the weight is trained). Saves ``x`` and ``r``.
- Rotary: with halves ``x = [x1, x2]``, ``y = [x1*c1 - x2*s1, x2*c2 + x1*s2]``; the backward is
  the transposed rotation ``dx = [g1*c1 + g2*s2, g2*c2 - g1*s1]``. Saves only ``cos``/``sin``.

Same formulas as transformers' (outputs and gradients equal within float rounding:
``tests/core/test_kernels.py``), taken only in training (gradients enabled, an input that
needs them) on CPU float32/float64 tensors; everything else runs transformers' own code.
Attached by :func:`adapters_core.kernels.attach` for :data:`DECODER_MODEL_TYPES` only, so
``init(model, cpu_kernels=False)`` or ``ADAPTERS_CORE_CPU_KERNELS=0`` turns them off too.

Measured and left alone: SDPA's CPU flash attention (forward and backward) beat an explicit
bmm/softmax path on the benchmark's shapes; SwiGLU ``silu(gate) * up`` is already three backward
kernels, which a fused function cannot beat without a native kernel; frozen ``nn.Linear``
layers already compute only the input's gradient (autograd skips what needs no gradient, and
nothing runs backward below the first trained module).
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# model type -> (transformers modeling module, RMSNorm class, attention class); each tested in
# tests/core/test_kernels.py against the module's own functions
DECODER_MODEL_TYPES: dict[str, tuple[str, str, str]] = {
    "llama": ("transformers.models.llama.modeling_llama", "LlamaRMSNorm", "LlamaAttention"),
    "mistral": (
        "transformers.models.mistral.modeling_mistral",
        "MistralRMSNorm",
        "MistralAttention",
    ),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2RMSNorm", "Qwen2Attention"),
}

# True inside the forward of an attention module this file was attached to: the rotary
# dispatcher installed in the modeling module takes the fused path only there
_ROTARY_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "adapters_core_fused_rotary", default=False
)
_FUSED_CLASSES: dict[str, type] = {}


def _fast(*tensors: torch.Tensor) -> bool:
    """Training on the CPU in float32/float64: some input needs a gradient."""
    return (
        torch.is_grad_enabled()
        and any(t.requires_grad for t in tensors)
        and all(
            t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors
        )
    )


# --- RMSNorm -----------------------------------------------------------------------------------


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        width = x.shape[-1]
        # mean(x^2) from one pass (the norm) instead of pow + mean
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(width)
        r = r.add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, r)
        return torch.mul(x, r).mul_(weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, r = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * x * r).sum(dim=tuple(range(grad.dim() - 1)))
        if ctx.needs_input_grad[0]:
            gw = grad * weight
            # d/dx of x * r: r * gw - x * r^3 * mean(gw * x)
            coef = (gw * x).sum(-1, keepdim=True).mul_(r.pow(3)).div_(-x.shape[-1])
            grad_x = torch.addcmul(gw.mul_(r), x, coef)
        return grad_x, grad_w, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x * rsqrt(mean(x^2, -1) + eps)``, as ``LlamaRMSNorm`` computes it."""
    return _RMSNormFunction.apply(x, weight, eps)


def _fused_class(norm_class: type) -> type:
    """``Fused<RMSNorm class>``: transformers' class with the fused training path, same state.

    Module-level names (see :func:`__getattr__`) so a model holding one still pickles."""
    name = f"Fused{norm_class.__name__}"
    if name not in _FUSED_CLASSES:

        def forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
            weight = self.weight
            if _fast(hidden_states, weight) and weight.dtype == hidden_states.dtype:
                return rms_norm(hidden_states, weight, self.variance_epsilon)
            return norm_class.forward(self, hidden_states)

        _FUSED_CLASSES[name] = type(
            name, (norm_class,), {"forward": forward, "__module__": __name__, "__qualname__": name}
        )
    return _FUSED_CLASSES[name]


def __getattr__(name: str) -> type:
    for module_name, norm_name, _ in DECODER_MODEL_TYPES.values():
        if name == f"Fused{norm_name}":
            return _fused_class(getattr(importlib.import_module(module_name), norm_name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- rotary position embedding -----------------------------------------------------------------


class _RotaryFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, transpose=False)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, transpose=True), None, None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, transpose: bool) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin``, or with ``transpose`` its adjoint (the backward)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c1, c2, s1, s2 = cos[..., :half], cos[..., half:], sin[..., :half], sin[..., half:]
    out = torch.empty_like(x)
    out1, out2 = out[..., :half], out[..., half:]
    torch.mul(x1, c1, out=out1)
    torch.mul(x2, c2, out=out2)
    if transpose:  # [g1*c1 + g2*s2, g2*c2 - g1*s1]
        out1.addcmul_(x2, s2)
        out2.addcmul_(x1, s1, value=-1)
    else:  # [x1*c1 - x2*s1, x2*c2 + x1*s2]
        out1.addcmul_(x2, s1, value=-1)
        out2.addcmul_(x1, s2)
    return out


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` (``cos``/``sin`` broadcast to ``x``), fused."""
    return _RotaryFunction.apply(x, cos, sin)


def _rotary_dispatcher(original: Callable) -> Callable:
    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if (
            _ROTARY_ACTIVE.get()
            and not args
            and not kwargs
            and _fast(q, k, cos, sin)
            and q.shape[-1] % 2 == 0
            and q.shape[-1] == k.shape[-1] == cos.shape[-1] == sin.shape[-1]
            and not cos.requires_grad
            and not sin.requires_grad
        ):
            cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
            return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return original(q, k, cos, sin, unsqueeze_dim, *args, **kwargs)

    apply_rotary_pos_emb.__wrapped__ = original  # type: ignore[attr-defined]
    apply_rotary_pos_emb._adapters_core_dispatcher = True  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def _install_rotary(modeling: Any) -> None:
    """Route the modeling module's ``apply_rotary_pos_emb`` through the dispatcher (once):
    outside an attached attention module it calls the original unchanged."""
    current = modeling.apply_rotary_pos_emb
    if not getattr(current, "_adapters_core_dispatcher", False):
        modeling.apply_rotary_pos_emb = _rotary_dispatcher(current)


def _enter_rotary(module: nn.Module, args: Any) -> None:
    module.__dict__.setdefault("_adapters_core_rotary_tokens", []).append(_ROTARY_ACTIVE.set(True))


def _leave_rotary(module: nn.Module, args: Any, output: Any) -> None:
    tokens = module.__dict__.get("_adapters_core_rotary_tokens")
    if tokens:
        _ROTARY_ACTIVE.reset(tokens.pop())


# --- attaching ---------------------------------------------------------------------------------


def attach(model: nn.Module) -> bool:
    """Put the fused RMSNorm and rotary paths into a model of a :data:`DECODER_MODEL_TYPES`
    type; False (nothing done) for any other model."""
    config = getattr(model, "config", None)
    entry = DECODER_MODEL_TYPES.get(getattr(config, "model_type", None))  # type: ignore[arg-type]
    if entry is None:
        return False
    module_name, norm_name, attention_name = entry
    modeling = importlib.import_module(module_name)
    norm_class, attention_class = getattr(modeling, norm_name), getattr(modeling, attention_name)
    for module in model.modules():
        if type(module) is norm_class:
            module.__class__ = _fused_class(norm_class)
        elif isinstance(module, attention_class) and not module.__dict__.get(
            "_adapters_core_rotary_hooked"
        ):
            module.register_forward_pre_hook(_enter_rotary)
            module.register_forward_hook(_leave_rotary, always_call=True)
            module.__dict__["_adapters_core_rotary_hooked"] = True
    _install_rotary(modeling)
    return True
