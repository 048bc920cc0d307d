"""Where bottleneck adapters run: one :class:`BottleneckSite` per adapter location of a layer.

The architecture table says per location how it is attached:

- ``swap``: the sub-block computing ``LN(dropout(dense(h)) + x)`` (BERT's ``attention.output``)
  gets its class swapped for a subclass whose forward runs the adapters in between;
- ``hook``: forward hooks around the model's own modules: one stores the residual ``x`` (the
  first input of the table's ``residual`` module), one on the ``output`` module runs the
  adapters on ``h``. The model then applies its own residual (and post-norm) as before.

Composition (Stack, Fuse, Split, BatchSplit, Parallel, Average) runs on
:class:`~.engine.ComposableLayer`, shared with the other methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..composition import (
    AdapterCompositionBlock,
    Average,
    BatchSplit,
    Fuse,
    Parallel,
    Split,
    Stack,
)
from ..context import ForwardContext
from ..errors import CompositionError
from .base import resolve
from .engine import ComposableLayer

if TYPE_CHECKING:
    from ..model_mixin import ModelAdaptersConfig
    from ..models.spec import AdapterLocation


class BottleneckState(NamedTuple):
    hidden_states: torch.Tensor
    input_tensor: torch.Tensor
    adapter_residual: torch.Tensor
    layer_norm: nn.Module | None
    bottleneck_up: torch.Tensor | None = None
    last: str | None = None


class BottleneckSite(ComposableLayer):
    """Mixin of a module holding ``adapters`` and ``adapter_fusion_layer`` (``nn.ModuleDict``).

    Set up by :meth:`init_site`; mixed into the container the table names (by class swap, or
    as the new :class:`BottleneckLayer` module)."""

    supported_compositions: ClassVar[tuple[type, ...]] = (
        Stack,
        Fuse,
        Split,
        Parallel,
        BatchSplit,
        Average,
    )

    location_key: str
    adapters: nn.ModuleDict
    adapter_fusion_layer: nn.ModuleDict

    def init_site(self, location_key: str, layer_idx: int, state: ModelAdaptersConfig) -> None:
        self.location_key = location_key
        self.layer_idx = layer_idx
        self.adapters_state = state
        if "adapters" not in self._modules:  # type: ignore[attr-defined]
            self.adapters = nn.ModuleDict()
            self.adapter_fusion_layer = nn.ModuleDict()

    def adapter_modules(self) -> Any:
        return self.adapters

    # --- the forward ---------------------------------------------------------------------

    def bottleneck_layer_forward(
        self,
        hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
        finish: bool = True,
    ) -> torch.Tensor:
        """Run the active setup on sub-block output ``hidden_states`` with residual
        ``input_tensor``. ``finish=False``: leave out the original residual and norm (the model
        adds them); returns ``hidden_states`` unchanged when nothing is active here."""
        setup = self.active_setup()
        if setup is None:
            return self._plain(hidden_states, input_tensor, layer_norm, finish)
        return self._run(setup, hidden_states, input_tensor, layer_norm, finish, 0)

    @staticmethod
    def _plain(
        hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
        finish: bool,
    ) -> torch.Tensor:
        """The sub-block's output when no adapter runs here."""
        if not finish:
            return hidden_states
        out = hidden_states + input_tensor
        return layer_norm(out) if layer_norm is not None else out

    def _run(
        self,
        setup: AdapterCompositionBlock | str,
        hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
        finish: bool,
        lvl: int,
    ) -> torch.Tensor:
        channels = self.channels(setup, hidden_states.shape[0])
        if channels is not None:  # Parallel, BatchSplit: each channel as if it alone were active
            outs = []
            for child, rows, child_lvl in channels:
                x = input_tensor[rows] if isinstance(input_tensor, torch.Tensor) else input_tensor
                outs.append(self._run(child, hidden_states[rows], x, layer_norm, finish, child_lvl))
            return torch.cat(outs, 0)
        if not self.holds_any(setup):
            return self._plain(hidden_states, input_tensor, layer_norm, finish)
        if isinstance(setup, str):
            setup = Stack(setup)
        # fast path: a single adapter, the common case at inference time
        if type(setup) is Stack and len(setup.children) == 1 and isinstance(setup.children[0], str):
            name = setup.children[0]
            adapter = self.adapters[name]
            h, _, residual = adapter.pre_forward(hidden_states, input_tensor, layer_norm)
            h, _, _, gate = adapter(h, residual)
            if gate is not None:
                self._store_gate(name, gate)
            return adapter.post_forward(h, hidden_states, input_tensor, layer_norm, finish)
        state = BottleneckState(hidden_states, input_tensor, input_tensor, layer_norm)
        state = self.compose(setup, state, lvl)
        if state.last is None:
            return self._plain(state.hidden_states, state.input_tensor, layer_norm, finish)
        last = self.adapters[state.last]
        return last.post_forward(
            state.hidden_states, hidden_states, state.input_tensor, layer_norm, finish
        )

    # --- composition operations ------------------------------------------------------------

    def pre_block(
        self, setup: AdapterCompositionBlock | str, state: BottleneckState
    ) -> BottleneckState:
        if isinstance(setup, str):
            name = setup
        else:
            name = setup.first()
            if name not in self.adapters:
                name = next((n for n in setup.flatten_ordered() if n in self.adapters), name)
        adapter = self.adapters[name]
        hidden, _, residual = adapter.pre_forward(
            state.hidden_states, state.input_tensor, state.layer_norm
        )
        return state._replace(hidden_states=hidden, adapter_residual=residual)

    def slice_state(self, state: Any, index: slice, dim: int) -> Any:
        out = super().slice_state(state, index, dim)
        return out._replace(bottleneck_up=None) if dim == 1 else out

    def compose_single(self, name: str, state: BottleneckState, lvl: int) -> BottleneckState:
        adapter = self.adapters[name]
        output, _, up, gate = adapter(state.hidden_states, state.adapter_residual)
        if gate is not None:
            self._store_gate(name, gate)
        return state._replace(hidden_states=output, bottleneck_up=up, last=name)

    def _store_gate(self, name: str, gate: torch.Tensor) -> None:
        """Record a gated adapter's scores when the forward asked for them (one per example,
        under the reference's keys: adapter, layer, location)."""
        ctx = ForwardContext.get_context()
        if ctx is not None and ctx.output_adapter_gating_scores:
            scores = ctx.adapter_gating_scores.setdefault(name, {})
            scores.setdefault(self.layer_idx, {})[self.location_key] = (
                gate.detach().squeeze().cpu().numpy()
            )

    def compose_fuse(self, setup: Fuse, state: BottleneckState, lvl: int) -> BottleneckState:
        if setup.name not in self.adapter_fusion_layer:
            if self.adapters_state.fusion_config(setup.name) is None:
                raise CompositionError(
                    f"No fusion layer named {setup.name!r}: call add_adapter_fusion() first."
                )
            return state  # fusion exists but this location has no layer (e.g. left out)
        fusion_config = self.adapters_state.fusion_config(setup.name)
        last = setup.last()
        hidden, query, residual = self.adapters[last].pre_forward(
            state.hidden_states, state.input_tensor, state.layer_norm, fusion_config=fusion_config
        )
        state = state._replace(hidden_states=hidden, adapter_residual=residual)
        children = [self._child(setup, c, state, lvl) for c in setup]
        done = [c for c in children if c is not None]
        if done:
            # (batch, seq, n_adapters, hidden), contiguous for the fusion layer's projections
            ups = torch.stack([c.bottleneck_up for c in done], dim=2)
            ctx = ForwardContext.get_context()
            want_attn = ctx is not None and ctx.output_adapter_fusion_attentions
            fused = self.adapter_fusion_layer[setup.name](
                query, ups, ups, state.adapter_residual, output_attentions=want_attn
            )
            if want_attn:
                fused, attn = fused
                ctx.adapter_fusion_attentions.setdefault(setup.name, {}).setdefault(  # type: ignore[union-attr]
                    self.layer_idx, {}
                )[self.location_key] = attn
            state = state._replace(hidden_states=fused)
        return state._replace(last=last)


class SwappedSubBlock(BottleneckSite):
    """Mixed into a BERT-style sub-block by class swap: ``forward(h, x)``."""

    _dense_name: ClassVar[str] = "dense"
    _dropout_name: ClassVar[str] = "dropout"
    _ln_name: ClassVar[str] = "LayerNorm"

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        modules = self._modules  # type: ignore[attr-defined]
        hidden_states = modules[self._dropout_name](modules[self._dense_name](hidden_states))
        layer_norm = modules[self._ln_name]
        if len(modules["adapters"]) == 0:
            return layer_norm(hidden_states + input_tensor)
        return self.bottleneck_layer_forward(hidden_states, input_tensor, layer_norm)


class BottleneckLayer(BottleneckSite, nn.Module):
    """A new container module for a hooked location (``attention_adapters``...)."""

    def __init__(self, location_key: str, layer_idx: int, state: ModelAdaptersConfig) -> None:
        nn.Module.__init__(self)
        self.init_site(location_key, layer_idx, state)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("A bottleneck location runs from hooks; it has no forward of its own.")


_SWAPPED: dict[tuple[type, type, str, str, str], type] = {}


def _mixed_class(module: nn.Module, mixin: type, names: tuple[str, str, str]) -> type:
    cls = type(module)
    key = (cls, mixin, *names)
    new_cls = _SWAPPED.get(key)
    if new_cls is None:
        attrs = {"__module__": cls.__module__}
        if mixin is SwappedSubBlock:
            attrs.update(_dense_name=names[0], _dropout_name=names[1], _ln_name=names[2])
        new_cls = type(cls.__name__, (mixin, cls), attrs)
        _SWAPPED[key] = new_cls
    return new_cls


# --- hooks ------------------------------------------------------------------------------------


def _first_input(args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    return kwargs.get("hidden_states", next(iter(kwargs.values()), None))


def _store(site: BottleneckSite, value: Any) -> None:
    ctx = ForwardContext.get_context()
    if ctx is not None:
        ctx.residuals[id(site)] = value
    else:
        site.__dict__["_residual"] = value


def _stored(site: BottleneckSite) -> Any:
    ctx = ForwardContext.get_context()
    if ctx is not None and id(site) in ctx.residuals:
        return ctx.residuals[id(site)]
    return site.__dict__.get("_residual")


class _ResidualPreHook:
    def __init__(self, site: BottleneckSite) -> None:
        self.site = site

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if len(self.site.adapters):
            _store(self.site, _first_input(args, kwargs))


class _ResidualOutputHook(_ResidualPreHook):
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:  # type: ignore[override]
        if len(self.site.adapters):
            _store(self.site, output if isinstance(output, torch.Tensor) else output[0])


class _AdapterHook:
    """Forward hook on the sub-block's output module: runs the adapters on its output."""

    def __init__(self, site: BottleneckSite, layer: nn.Module, loc: AdapterLocation) -> None:
        self.site = site
        # plain attribute: a deepcopy of the model maps it to the copied layer
        self.layer = layer
        self.layer_norm = loc.layer_norm

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        site = self.site
        if not len(site.adapters) or site.active_setup() is None:
            return None
        residual = _stored(site)
        layer_norm = resolve(self.layer, self.layer_norm) if self.layer_norm else None
        hidden = output if isinstance(output, torch.Tensor) else output[0]
        if residual is not None and residual.shape[0] != hidden.shape[0]:
            raise CompositionError("Residual and sub-block output differ in batch size.")
        result = site.bottleneck_layer_forward(hidden, residual, layer_norm, finish=False)
        if isinstance(output, torch.Tensor):
            return result
        return (result, *output[1:])


def attach_location(
    layer: nn.Module, loc: AdapterLocation, layer_idx: int, state: ModelAdaptersConfig
) -> BottleneckSite:
    """Make one location of one layer ready for adapters; returns its site (idempotent)."""
    parent_path, _, attr = loc.container.rpartition(".")
    parent = resolve(layer, parent_path)
    container = getattr(parent, attr, None)
    if isinstance(container, BottleneckSite):
        return container
    if loc.attach == "swap":
        assert container is not None and loc.layer_norm is not None
        container.__class__ = _mixed_class(
            container, SwappedSubBlock, (loc.dense, loc.dropout, loc.layer_norm)
        )
        site: BottleneckSite = container  # type: ignore[assignment]
        site.init_site(loc.key, layer_idx, state)
        return site
    if container is None:
        site = BottleneckLayer(loc.key, layer_idx, state)
        parent.add_module(attr, site)  # type: ignore[arg-type]
    else:
        container.__class__ = _mixed_class(container, BottleneckSite, ("", "", ""))
        site = container  # type: ignore[assignment]
        site.init_site(loc.key, layer_idx, state)
    residual_module = resolve(layer, loc.residual)
    if loc.residual_from == "input":
        residual_module.register_forward_pre_hook(_ResidualPreHook(site), with_kwargs=True)
    else:
        residual_module.register_forward_hook(_ResidualOutputHook(site), with_kwargs=True)
    resolve(layer, loc.output).register_forward_hook(_AdapterHook(site, layer, loc))
    return site
