"""Per-call state: the ``AdapterSetup`` context manager and the per-forward ``ForwardContext``."""

from __future__ import annotations

import contextvars
from typing import Any

from .composition import AdapterCompositionBlock, parse_composition, parse_heads_from_composition

_SETUP_STACK: contextvars.ContextVar[tuple[AdapterSetup, ...]] = contextvars.ContextVar(
    "adapters_core_setup_stack", default=()
)
_FORWARD_CONTEXT: contextvars.ContextVar[ForwardContext | None] = contextvars.ContextVar(
    "adapters_core_forward_context", default=None
)


class AdapterSetup:
    """Activate a setup (and head setup) for the forward passes inside a ``with`` block.

    Takes priority over ``model.active_adapters`` / ``model.active_head``::

        with AdapterSetup(Stack("lang", "task")):
            outputs = model(**batch)
    """

    def __init__(
        self,
        adapter_setup: Any,
        head_setup: Any = None,
        ignore_empty: bool = False,
    ) -> None:
        self.adapter_setup: AdapterCompositionBlock | None = parse_composition(adapter_setup)  # type: ignore[assignment]
        self.flat: frozenset[str] = frozenset(
            self.adapter_setup.flatten() if self.adapter_setup is not None else ()
        )
        if head_setup is not None:
            self.head_setup = head_setup
        else:
            self.head_setup = parse_heads_from_composition(self.adapter_setup)
        self._ignore = ignore_empty and self.adapter_setup is None and self.head_setup is None
        self._token: contextvars.Token | None = None

    def __enter__(self) -> AdapterSetup:
        if not self._ignore:
            self._token = _SETUP_STACK.set(_SETUP_STACK.get() + (self,))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _SETUP_STACK.reset(self._token)
            self._token = None

    @staticmethod
    def get_context() -> AdapterSetup | None:
        stack = _SETUP_STACK.get()
        return stack[-1] if stack else None

    @classmethod
    def get_context_adapter_setup(cls) -> AdapterCompositionBlock | None:
        ctx = cls.get_context()
        return ctx.adapter_setup if ctx is not None else None

    @classmethod
    def get_context_head_setup(cls) -> Any:
        ctx = cls.get_context()
        return ctx.head_setup if ctx is not None else None


class ForwardContext:
    """Per-forward state, opened on every forward of a model with adapters.

    Carries optional outputs (fusion attention scores, gating scores), the residuals hooked
    bottleneck locations store between their two hooks, and free-form per-forward values
    methods need (``values``: prefix states, prompt lengths, ReFT positions...). Reach it from
    inside a forward with :meth:`get_context`.
    """

    def __init__(
        self,
        output_adapter_fusion_attentions: bool = False,
        output_adapter_gating_scores: bool = False,
        **values: Any,
    ) -> None:
        self.output_adapter_fusion_attentions = output_adapter_fusion_attentions
        self.output_adapter_gating_scores = output_adapter_gating_scores
        self.adapter_fusion_attentions: dict[str, dict[int, dict[str, Any]]] = {}
        self.adapter_gating_scores: dict[str, dict[int, dict[str, Any]]] = {}
        self.residuals: dict[int, Any] = {}
        self.values: dict[str, Any] = dict(values)
        self.adapter_setup = AdapterSetup.get_context_adapter_setup()
        self._token: contextvars.Token | None = None

    def __enter__(self) -> ForwardContext:
        self._token = _FORWARD_CONTEXT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _FORWARD_CONTEXT.reset(self._token)
            self._token = None

    @staticmethod
    def get_context() -> ForwardContext | None:
        return _FORWARD_CONTEXT.get()


def _open_context(module: Any, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of a base model: open a ForwardContext unless one is open."""
    opened = module.__dict__.setdefault("_adapters_forward_contexts", [])
    if ForwardContext.get_context() is None:
        ctx = ForwardContext()
        ids = kwargs.get("input_ids", args[0] if args else None)
        ctx.values["attention_mask"] = kwargs.get("attention_mask")
        ctx.values["input_ids"] = ids
        opened.append(ctx.__enter__())
    else:
        opened.append(None)


def _close_context(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    opened = module.__dict__.get("_adapters_forward_contexts")
    if opened:
        ctx = opened.pop()
        if ctx is not None:
            ctx.__exit__(None, None, None)


def open_on_every_forward(module: Any) -> None:
    """Register the hooks that open a ForwardContext around every forward of ``module``."""
    module.register_forward_pre_hook(_open_context, with_kwargs=True, prepend=True)
    module.register_forward_hook(_close_context, with_kwargs=True, always_call=True)
