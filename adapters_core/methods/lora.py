"""The LoRA family (LoRA, IA3, DoRA, VeRA) on the linear layers an architecture table names.

A wrapped layer keeps its own object, parameters and hooks: its class is swapped (the first time
an adapter of the family is added) for a subclass whose forward adds the active adapters' output
to the frozen layer's. ``nn.Linear`` and transformers' ``Conv1D`` (weight stored transposed)
are both handled, as are fused projections (q, k and v in one matrix), where each adapter only
touches the rows of the parts its ``attn_matrices`` name. Weight names match the reference:
``<layer path>.loras.<name>.lora_A``; VeRA's shared matrices live once, at
``shared_parameters.<name>`` of the base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from ..composition import (
    AdapterCompositionBlock,
    Average,
    BatchSplit,
    Fuse,
    MultiTask,
    Parallel,
    Split,
    Stack,
)
from ..configuration import AdapterConfig, ConfigUnion
from ..configuration.lora_config import LoRAConfig
from ..context import ForwardContext
from ..errors import AdapterError, CompositionError
from .engine import ComposableLayer
from .lora_variants import VARIANTS, LoRA, LoRAVariant, VeraShared
from .mtl_lora import prune_shared

if TYPE_CHECKING:
    from ..model_mixin import ModelAdaptersConfig


@dataclass(frozen=True)
class LinearTarget:
    """One linear layer the family may wrap (``path`` relative to the base model)."""

    layer_idx: int
    path: str
    location: str  # "selfattn", "crossattn", "intermediate" or "output"
    attn_key: str | None = None  # q, k, v or o for attention projections
    fused: tuple[str, ...] = ()  # ("q", "k", "v") for a fused projection, in row order

    def parts_for(self, config: LoRAConfig) -> list[str]:
        """The parts of this layer ``config`` adapts (one unnamed part for a plain layer).

        Cross-attention counts as attention, as in the reference (``selfattn_lora`` and
        ``attn_matrices`` select it too)."""
        if self.location in ("selfattn", "crossattn"):
            if not config.selfattn_lora:
                return []
            if self.fused:
                return [p for p in self.fused if p in config.attn_matrices]
            return [""] if self.attn_key in config.attn_matrices else []
        if self.location == "intermediate":
            return [""] if config.intermediate_lora else []
        if self.location == "output":
            return [""] if config.output_lora else []
        return []


class LoRAState(NamedTuple):
    hidden_states: torch.Tensor  # the layer's input
    delta: torch.Tensor | None  # what the adapters computed so far (compact rows)
    out: torch.Tensor  # the frozen layer's output
    last: str | None


def lora_configs_of(config: AdapterConfig) -> list[LoRAConfig]:
    if isinstance(config, ConfigUnion):
        return [c for c in config.configs if isinstance(c, LoRAConfig)]
    return [config] if isinstance(config, LoRAConfig) else []


class LoRALayerMixin(ComposableLayer, nn.Module):
    """Swapped into an ``nn.Linear`` / ``Conv1D``; see the module docstring. Compositions run
    on the shared engine; Fuse and Split pass through when none of their adapters is here."""

    _lora_base_cls: type  # the wrapped layer's own class

    supported_compositions = (Stack, BatchSplit, Parallel, Average, Fuse, Split, MultiTask)

    def init_lora_layer(self, target: LinearTarget, state: ModelAdaptersConfig) -> None:
        self.lora_target = target
        self.layer_idx = target.layer_idx
        self.location_key = f"{target.location}_lora"
        self.adapters_state = state
        self.loras = nn.ModuleDict()
        self.lora_merged: str | None = None
        self._lora_parts: dict[str, list[str]] = {}
        self._dora_saved: dict[str, tuple[list[torch.Tensor], list[torch.Tensor] | None]] = {}

    # --- geometry --------------------------------------------------------------------------

    @property
    def transposed(self) -> bool:
        return isinstance(self, Conv1D)

    @property
    def in_out(self) -> tuple[int, int]:
        w = self.weight
        return (w.shape[0], w.shape[1]) if self.transposed else (w.shape[1], w.shape[0])

    def weight_oi(self) -> torch.Tensor:
        """The weight as (out, in), a view of the parameter."""
        return self.weight.t() if self.transposed else self.weight

    @property
    def part_rows(self) -> int:
        out = self.in_out[1]
        return out // len(self.lora_target.fused) if self.lora_target.fused else out

    def _row_index(self, name: str) -> list[slice] | None:
        """Row slices of the full output that adapter ``name`` touches (None: all rows)."""
        parts = self._lora_parts[name]
        fused = self.lora_target.fused
        if not fused or len(parts) == len(fused):
            return None
        size = self.part_rows
        return [slice(fused.index(p) * size, (fused.index(p) + 1) * size) for p in parts]

    def _pad(self, name: str, h: torch.Tensor, fill: float) -> torch.Tensor:
        slices = self._row_index(name)
        if slices is None:
            return h
        size, fused, parts = self.part_rows, self.lora_target.fused, self._lora_parts[name]
        chunks = h.split(size, dim=-1)
        pieces = []
        for part in fused:
            if part in parts:
                pieces.append(chunks[parts.index(part)])
            else:
                pieces.append(h.new_full((*h.shape[:-1], size), fill))
        return torch.cat(pieces, dim=-1)

    # --- adding ----------------------------------------------------------------------------

    def add_lora(self, name: str, config: LoRAConfig, shared: VeraShared | None) -> bool:
        parts = self.lora_target.parts_for(config)
        if not parts or self.layer_idx in config.leave_out:
            return False
        in_features, out_features = self.in_out
        rows = self.part_rows if self.lora_target.fused else out_features
        weight_rows = None
        self._lora_parts[name] = parts
        if config.use_dora:
            w = self.weight_oi()
            slices = self._row_index(name)
            weight_rows = w if slices is None else torch.cat([w[s] for s in slices], 0)
        kwargs: dict[str, Any] = {"weight_rows": weight_rows}
        if config.use_gating and self.lora_target.fused:
            kwargs["gating_heads"] = len(parts)  # one gate per fused part, as the reference
        if config.is_vera and config.composition_mode == "add":
            kwargs["shared"] = shared
        cls = VARIANTS[config.variant]
        module = cls(in_features, rows, len(parts), config, **kwargs)
        dtype = module_dtype(config, self.weight)
        module.to(device=self.weight.device, dtype=dtype)
        module.train(self.training)
        self.loras[name] = module
        return True

    def delete_lora(self, name: str) -> None:
        if self.lora_merged == name:
            self.reset_lora()
        if name in self.loras:
            del self.loras[name]
        self._lora_parts.pop(name, None)
        prune_shared(self)

    # --- forward ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if not self.loras or self.lora_merged is not None:
            return out
        setup = self.active_setup()
        if setup is None:
            return out
        return self._apply(setup, x, out, 0)

    def _apply(
        self, setup: AdapterCompositionBlock | str, x: torch.Tensor, out: torch.Tensor, lvl: int
    ) -> torch.Tensor:
        """``out`` (the frozen layer's output for ``x``) with ``setup``'s adapters applied."""
        channels = self.channels(setup, x.shape[0])
        if channels is not None:  # Parallel, BatchSplit: each channel as if it alone were active
            return torch.cat([self._apply(c, x[s], out[s], lv) for c, s, lv in channels], 0)
        if not self.holds_any(setup):
            return out
        name = setup if isinstance(setup, str) else None
        if type(setup) is Stack and len(setup.children) == 1 and isinstance(setup[0], str):
            name = setup[0]
        if name is not None:
            module = self.loras[name]
            if module.fused_add:
                return module.add_to(out, x)
            if module.use_dora and module.dora_add:
                # DoRA, same as _combine's: m / norm * (out + B A x * scaling), the update
                # accumulated onto out by the GEMM (no separate scaling and addition passes)
                scale = module.m.weight.view(-1) / self._dora_norm(name, module)
                return module.add_to(out, x) * scale.to(out.dtype)
            delta, gate = module(None, x)
            if gate is not None:
                self._store_gate(name, gate)
            return self._combine(name, out, delta)
        state = self.compose(setup, LoRAState(x, None, out, None), lvl)
        if state.last is None or state.delta is None:
            return state.out
        return self._combine(state.last, state.out, state.delta)

    def _combine(self, name: str, out: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        module = self.loras[name]
        if delta.dtype != out.dtype:
            delta = delta.to(out.dtype)
        if module.composition_mode == "scale":
            return out * self._pad(name, delta, 1.0)
        if module.use_dora:
            scale = module.m.weight.view(-1) / self._dora_norm(name, module)
            scale = self._pad(name, scale.to(out.dtype), 1.0)
            return scale * (out + self._pad(name, delta, 0.0))
        return out + self._pad(name, delta, 0.0)

    def _compact_weight(self, name: str) -> torch.Tensor:
        w = self.weight_oi()
        slices = self._row_index(name)
        return w if slices is None else torch.cat([w[s] for s in slices], 0)

    def _dora_norm(self, name: str, module: LoRAVariant) -> torch.Tensor:
        """The reference's norm: of the frozen weight plus the unscaled update, per row.

        For plain LoRA without materialising ``W + B A``: ``|W_i|^2 + 2 B_i (W A^T)_i +
        B_i (A A^T) B_i^T``, one pass over W (its own row norms are cached while it is
        frozen and unchanged)."""
        weight = self.weight_oi()
        if isinstance(module, LoRA) and module.n_parts == 1 and weight.dtype == module.lora_A.dtype:
            a, b = module.lora_A, module.lora_B
            cross = (b * F.linear(weight, a)).sum(dim=1)
            square = ((b @ (a @ a.t())) * b).sum(dim=1)
            return (self._weight_sq_norms() + 2.0 * cross + square).clamp_min(0.0).sqrt()
        delta = module.delta_weight().to(weight.dtype)
        return torch.linalg.norm(self._compact_weight(name) + delta, dim=1)

    def _weight_sq_norms(self) -> torch.Tensor:
        w = self.weight
        if w.requires_grad:
            return self.weight_oi().pow(2).sum(dim=1)
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        cached = self.__dict__.get("_lora_w2")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self.weight_oi().pow(2).sum(dim=1))
            self.__dict__["_lora_w2"] = cached
        return cached[1]

    def _store_gate(self, name: str, gate: torch.Tensor) -> None:
        ctx = ForwardContext.get_context()
        if ctx is not None and ctx.output_adapter_gating_scores:
            scores = ctx.adapter_gating_scores.setdefault(name, {})
            scores.setdefault(self.layer_idx, {})[self.location_key] = (
                gate.detach().squeeze().cpu().numpy()
            )

    # --- composition (the engine calls these) ------------------------------------------------

    def adapter_modules(self) -> nn.ModuleDict:
        return self.loras

    def compose_single(self, name: str, state: LoRAState, lvl: int) -> LoRAState:
        delta, gate = self.loras[name](state.delta, state.hidden_states)
        if gate is not None:
            self._store_gate(name, gate)
        return state._replace(delta=delta, last=name)

    def compose_fuse(self, setup: Fuse, state: LoRAState, lvl: int) -> LoRAState:
        return self._pass_through(setup, state)

    def compose_split(self, setup: Split, state: LoRAState, lvl: int) -> LoRAState:
        return self._pass_through(setup, state)

    def _pass_through(self, setup: AdapterCompositionBlock, state: LoRAState) -> LoRAState:
        if set(setup.flatten()).isdisjoint(self.loras.keys()):
            return state
        raise CompositionError(
            f"{type(setup).__name__} composition is not supported by LoRA-family adapters."
        )

    def slice_state(self, state: LoRAState, index: slice, dim: int) -> LoRAState:
        delta = state.delta
        if delta is not None:
            delta = delta.expand(*state.hidden_states.shape[:-1], delta.shape[-1])
            delta = delta[index] if dim == 0 else delta[:, index]
        x, out = state.hidden_states, state.out
        if dim == 0:
            return LoRAState(x[index], delta, out[index], state.last)
        return LoRAState(x[:, index], delta, out[:, index], state.last)

    def concat_states(self, states: list[LoRAState], dim: int) -> LoRAState:
        deltas = [s.delta for s in states]
        last = next((s.last for s in reversed(states) if s.last is not None), None)
        delta = None
        if last is not None and any(d is not None for d in deltas):
            fill = 1.0 if self.loras[last].composition_mode == "scale" else 0.0
            ref = next(d for d in deltas if d is not None)
            parts = []
            for s, d in zip(states, deltas, strict=True):
                if d is None:  # a child without an adapter here: the neutral element
                    d = ref.new_full((*s.hidden_states.shape[:-1], ref.shape[-1]), fill)
                parts.append(d.expand(*s.hidden_states.shape[:-1], d.shape[-1]))
            delta = torch.cat(parts, dim)
        return LoRAState(
            torch.cat([s.hidden_states for s in states], dim),
            delta,
            torch.cat([s.out for s in states], dim),
            last,
        )

    def average_states(self, states: list[LoRAState], weights: list[float]) -> LoRAState:
        done = [s for s in states if s.delta is not None]
        if not done:
            return states[0]
        stacked = torch.stack([s.delta for s in done], 0)  # type: ignore[misc]
        w = torch.tensor(weights[: len(done)], dtype=stacked.dtype, device=stacked.device)
        w = w.view(-1, *([1] * (stacked.dim() - 1)))
        # the reference takes the mean of the weighted outputs (it divides by N as well)
        return done[-1]._replace(delta=(stacked * w).mean(dim=0))

    # --- merging ---------------------------------------------------------------------------

    def merge_lora(self, name: str) -> None:
        if name not in self.loras:
            return
        if self.lora_merged == name:
            return
        if self.lora_merged is not None:
            raise AdapterError(
                f"Adapter {self.lora_merged!r} is already merged into this layer; call "
                "reset_adapter() first."
            )
        module = self.loras[name]
        if module.use_gating:
            raise AdapterError("Cannot merge a LoRA module with gating (use_gating=True).")
        with torch.no_grad():
            w, delta, rows, offsets = self._merge_geometry(name, module)
            if module.composition_mode == "scale":
                factor = (delta.view(-1) * module.scaling).to(w.dtype)
                self._scale_rows(rows, offsets, factor)
            elif module.use_dora:
                # dividing the magnitude back out is not exact: keep the rows it rescales
                bias = self.bias
                self._dora_saved[name] = (
                    [w[s].clone() for s in rows],
                    [bias[s].clone() for s in rows] if bias is not None else None,
                )
                # the forward's own norm, so merged and unmerged scale the rows alike
                norm = self._dora_norm(name, module)
                factor = module.m.weight.view(-1).to(w.dtype) / norm
                for s, (a, b) in zip(rows, offsets, strict=True):
                    w[s] += module.scaling * delta[a:b]
                self._scale_rows(rows, offsets, factor)
            else:
                for s, (a, b) in zip(rows, offsets, strict=True):
                    w[s] += module.scaling * delta[a:b]
        self.lora_merged = name
        self.__class__ = _layer_class(self._lora_base_cls, merged=True)

    def reset_lora(self) -> None:
        name = self.lora_merged
        if name is None:
            return
        module = self.loras[name]
        with torch.no_grad():
            w, delta, rows, offsets = self._merge_geometry(name, module)
            if module.composition_mode == "scale":
                factor = (delta.view(-1) * module.scaling).to(w.dtype)
                self._scale_rows(rows, offsets, 1.0 / factor)
            elif module.use_dora:
                weights, biases = self._dora_saved.pop(name)
                for i, s in enumerate(rows):
                    w[s] = weights[i]
                    if biases is not None:
                        self.bias[s] = biases[i]
            else:
                for s, (a, b) in zip(rows, offsets, strict=True):
                    w[s] -= module.scaling * delta[a:b]
        self.lora_merged = None
        self.__class__ = _layer_class(self._lora_base_cls, merged=False)

    def _merge_geometry(self, name: str, module: LoRAVariant) -> tuple[Any, Any, Any, Any]:
        """(weight as (out, in), unscaled update, row slices of the weight, rows of the update)."""
        w = self.weight_oi()
        delta = module.delta_weight().to(w.dtype)
        rows = self._row_index(name) or [slice(None)]
        return w, delta, rows, _offsets(rows, delta.shape[0])

    def _scale_rows(
        self, rows: list[slice], offsets: list[tuple[int, int]], factor: torch.Tensor
    ) -> None:
        w = self.weight_oi()
        for s, (a, b) in zip(rows, offsets, strict=True):
            w[s] *= factor[a:b].unsqueeze(1)
            if self.bias is not None:
                self.bias[s] *= factor[a:b]


def _offsets(rows: list[slice], total: int) -> list[tuple[int, int]]:
    if rows == [slice(None)]:
        return [(0, total)]
    size = total // len(rows)
    return [(i * size, (i + 1) * size) for i in range(len(rows))]


def module_dtype(config: LoRAConfig, weight: torch.Tensor) -> torch.dtype | None:
    if config.dtype:
        return getattr(torch, config.dtype)
    return weight.dtype if weight.dtype.is_floating_point else None


_SWAPPED: dict[tuple[type, bool], type] = {}


def _layer_class(base: type, merged: bool) -> type:
    """The wrapped class of ``base``; ``merged``: its forward is ``base``'s own, untouched (a
    merged layer costs nothing at inference)."""
    new_cls = _SWAPPED.get((base, merged))
    if new_cls is None:
        attrs: dict[str, Any] = {"__module__": base.__module__, "_lora_base_cls": base}
        if merged:
            attrs["forward"] = base.forward
        new_cls = type(base.__name__, (LoRALayerMixin, base), attrs)
        _SWAPPED[(base, merged)] = new_cls
    return new_cls


def _swap(module: nn.Module) -> None:
    if isinstance(module, LoRALayerMixin):
        return
    if not isinstance(module, nn.Linear | Conv1D):
        raise AdapterError(
            f"LoRA-family adapters wrap nn.Linear or Conv1D layers, not {type(module).__name__}."
        )
    module.__class__ = _layer_class(type(module), merged=False)


def lora_layers(base_model: nn.Module) -> list[LoRALayerMixin]:
    return [m for m in base_model.modules() if isinstance(m, LoRALayerMixin)]
