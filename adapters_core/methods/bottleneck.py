"""Bottleneck adapters (seq_bn / Pfeiffer, double_seq_bn / Houlsby, par_bn, AdapterPlus).

Each residual sub-block named by the architecture table (attention output, FFN output) gets its
class swapped for a subclass whose forward runs ``LN(dropout(dense(h)) + x)`` through the active
adapters. Module and parameter names equal the reference library's, so weights interchange:
``<layer>.output.adapters.<name>.adapter_down.0.weight``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..composition import (
    ALLOWED_NESTINGS,
    AdapterCompositionBlock,
    Average,
    BatchSplit,
    Fuse,
    Parallel,
    Split,
    Stack,
)
from ..configuration import AdapterConfig, BnConfig, ConfigUnion
from ..context import AdapterSetup, ForwardContext
from ..errors import AdapterConfigError, CompositionError
from ..kernels import Dropout
from .base import Activation, AdapterMethod
from .fusion import AdapterFusionLayer

if TYPE_CHECKING:
    from ..model_mixin import ModelAdaptersConfig
    from ..models.spec import ArchitectureSpec


def _init_bert(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)


class StochasticDepth(nn.Module):
    """Drops the whole adapter output per sample while training (AdapterPlus)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * noise / keep


class BottleneckAdapter(nn.Module):
    """One sequential bottleneck: down-projection, non-linearity, up-projection, residual."""

    is_parallel: ClassVar[bool] = False

    def __init__(self, name: str, input_size: int, down_size: int, config: BnConfig) -> None:
        super().__init__()
        self.name = name
        self.input_size = input_size
        self.down_size = max(1, down_size)
        self.add_layer_norm_before = config.ln_before
        self.add_layer_norm_after = config.ln_after
        self.adapter_residual_before_ln = config.adapter_residual_before_ln
        self.use_gating = config.use_gating
        self.residual_before_ln = config.residual_before_ln
        self.original_ln_before = config.original_ln_before
        self.original_ln_after = config.original_ln_after
        if config.phm_layer:
            raise AdapterConfigError(
                "Compacter (phm_layer=True) is not implemented in adapters_core yet: "
                "method compacter arrives with the issue that adds the other methods."
            )

        seq: list[nn.Module] = []
        if self.add_layer_norm_before:
            self.adapter_norm_before = nn.LayerNorm(input_size)
            seq.append(self.adapter_norm_before)
        seq.append(nn.Linear(input_size, self.down_size))
        seq.append(Activation(config.non_linearity.lower()))
        self.adapter_down = nn.Sequential(*seq)
        self.adapter_up = nn.Linear(self.down_size, input_size)

        if isinstance(config.scaling, int | float) and not isinstance(config.scaling, bool):
            self.scaling: Any = float(config.scaling)
        elif config.scaling == "learned":
            self.scaling = nn.Parameter(torch.ones(1))
        elif config.scaling == "channel":
            self.scaling = nn.Parameter(torch.ones(input_size))
        else:
            raise AdapterConfigError(f"Unknown scaling {config.scaling!r}.")

        if self.add_layer_norm_after:
            self.adapter_norm_after = nn.LayerNorm(input_size)
        if self.use_gating:
            self.gate = nn.Linear(input_size, 1)
        self.dropout = Dropout(p=config.dropout)
        if config.stochastic_depth:
            self.DropPath = StochasticDepth(float(config.stochastic_depth))
        self._init_weights(config)

    def _init_weights(self, config: BnConfig) -> None:
        generator = None
        if config.init_weights_seed is not None:
            generator = torch.Generator().manual_seed(int(config.init_weights_seed))
        with torch.no_grad():
            linears = [m for m in self.adapter_down if isinstance(m, nn.Linear)]
            if config.init_weights == "bert":
                for m in [*linears, self.adapter_up]:
                    m.weight.normal_(0.0, 0.02, generator=generator)
                    m.bias.zero_()
                if self.add_layer_norm_before:
                    _init_bert(self.adapter_norm_before)
            elif config.init_weights == "mam_adapter":
                for m in linears:
                    bound = 1 / math.sqrt(m.weight.shape[1])  # kaiming_uniform_ with a=sqrt(5)
                    m.weight.uniform_(-bound, bound, generator=generator)
                    m.bias.zero_()
                self.adapter_up.weight.zero_()
                self.adapter_up.bias.zero_()
            elif config.init_weights == "houlsby":
                for m in [*linears, self.adapter_up]:
                    nn.init.trunc_normal_(m.weight, 0.0, 1e-2, -2e-2, 2e-2, generator=generator)
                    m.bias.zero_()
            if self.use_gating:
                self.gate.weight.normal_(0.0, 0.02, generator=generator)
                self.gate.bias.zero_()

    def pre_forward(
        self,
        hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
        fusion_config: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Returns (adapter input, fusion query, adapter residual)."""
        query = None
        residual = hidden_states
        if fusion_config is not None and fusion_config["query_before_ln"]:
            query = hidden_states
        if self.original_ln_before:
            hidden_states = hidden_states + input_tensor
            if layer_norm is not None:
                if self.residual_before_ln == "post_add":
                    residual = hidden_states
                hidden_states = layer_norm(hidden_states)
        if not self.residual_before_ln:
            residual = hidden_states
        if fusion_config is not None and not fusion_config["query_before_ln"]:
            query = hidden_states
        return hidden_states, query, residual

    def forward(
        self, x: torch.Tensor, residual_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        down = self.adapter_down(x)
        up = self.adapter_up(down)
        if hasattr(self, "DropPath"):
            up = self.DropPath(up)
        up = up * self.scaling
        output = self.dropout(up)
        gate = None
        if self.use_gating:
            gate = torch.sigmoid(self.gate(x)).mean(dim=1).unsqueeze(-1)
            output = output * gate
        if self.adapter_residual_before_ln:
            output = output + residual_input
        if self.add_layer_norm_after:
            output = self.adapter_norm_after(output)
        if not self.adapter_residual_before_ln:
            output = output + residual_input
        return output, down, up, gate

    def post_forward(
        self,
        hidden_states: torch.Tensor,
        input_hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
    ) -> torch.Tensor:
        if self.original_ln_after:
            hidden_states = hidden_states + input_tensor
            if layer_norm is not None:
                hidden_states = layer_norm(hidden_states)
        return hidden_states


class ParallelBottleneckAdapter(BottleneckAdapter):
    """A bottleneck fed with the sub-block input, added to the sub-block output (He et al.)."""

    is_parallel: ClassVar[bool] = True

    def pre_forward(
        self,
        hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
        fusion_config: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        return input_tensor, (input_tensor if fusion_config is not None else None), input_tensor

    def forward(
        self, x: torch.Tensor, residual_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        down = self.adapter_down(x)
        up = self.adapter_up(down) * self.scaling
        output = self.dropout(up)
        gate = None
        if self.use_gating:
            gate = torch.sigmoid(self.gate(x)).mean(dim=1).unsqueeze(-1)
            output = output * gate
        if self.add_layer_norm_after:
            output = self.adapter_norm_after(output)
        return output, down, up, gate

    def post_forward(
        self,
        hidden_states: torch.Tensor,
        input_hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
    ) -> torch.Tensor:
        hidden_states = hidden_states + input_hidden_states
        return super().post_forward(hidden_states, input_hidden_states, input_tensor, layer_norm)


class BottleneckState(NamedTuple):
    hidden_states: torch.Tensor
    input_tensor: torch.Tensor
    adapter_residual: torch.Tensor
    layer_norm: nn.Module | None
    bottleneck_up: torch.Tensor | None = None
    last: str | None = None


def _slice(state: BottleneckState, index: slice, dim: int = 0) -> BottleneckState:
    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        return t[index] if dim == 0 else t[:, index]

    return BottleneckState(
        cut(state.hidden_states),  # type: ignore[arg-type]
        cut(state.input_tensor),  # type: ignore[arg-type]
        cut(state.adapter_residual),  # type: ignore[arg-type]
        state.layer_norm,
        cut(state.bottleneck_up),
        state.last,
    )


def _concat(states: list[BottleneckState], dim: int = 0) -> BottleneckState:
    up = None
    if states[0].bottleneck_up is not None and all(s.bottleneck_up is not None for s in states):
        up = torch.cat([s.bottleneck_up for s in states], dim=dim)  # type: ignore[misc]
    return BottleneckState(
        torch.cat([s.hidden_states for s in states], dim=dim),
        torch.cat([s.input_tensor for s in states], dim=dim),
        torch.cat([s.adapter_residual for s in states], dim=dim),
        states[0].layer_norm,
        up,
        states[-1].last,
    )


class BottleneckLayerMixin(nn.Module):
    """Mixed into a residual sub-block (attention output / FFN output) by class swap.

    Attributes set by :meth:`init_bottleneck_layer`: ``adapters`` and ``adapter_fusion_layer``
    (``nn.ModuleDict``), ``location_key`` and ``layer_idx``, and the model's shared state.
    """

    _dense_name: ClassVar[str] = "dense"
    _dropout_name: ClassVar[str] = "dropout"
    _ln_name: ClassVar[str] = "LayerNorm"

    def init_bottleneck_layer(
        self, location_key: str, layer_idx: int, state: ModelAdaptersConfig
    ) -> None:
        self.location_key = location_key
        self.layer_idx = layer_idx
        self.adapters_state = state
        self.adapters = nn.ModuleDict()
        self.adapter_fusion_layer = nn.ModuleDict()

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        modules = self._modules
        hidden_states = modules[self._dropout_name](modules[self._dense_name](hidden_states))
        layer_norm = modules[self._ln_name]
        if len(modules["adapters"]) == 0:  # type: ignore[arg-type]
            return layer_norm(hidden_states + input_tensor)
        return self.bottleneck_layer_forward(hidden_states, input_tensor, layer_norm)

    # --- composition -----------------------------------------------------------------------

    def _active_setup(self) -> AdapterCompositionBlock | None:
        ctx = AdapterSetup.get_context()
        state = self.adapters_state
        if ctx is not None:
            setup, flat = ctx.adapter_setup, ctx.flat
        else:
            setup, flat = state.active_setup, state.active_flat
        if setup is None:
            return None
        if state.skip_layers is not None and self.layer_idx in state.skip_layers:
            return None
        adapters = self.adapters
        for name in flat:
            if name in adapters:
                return setup
        return None

    def bottleneck_layer_forward(
        self,
        hidden_states: torch.Tensor,
        input_tensor: torch.Tensor,
        layer_norm: nn.Module | None,
    ) -> torch.Tensor:
        setup = self._active_setup()
        if setup is None:
            out = hidden_states + input_tensor
            return layer_norm(out) if layer_norm is not None else out
        # fast path: a single adapter, the common case at inference time
        if type(setup) is Stack and len(setup.children) == 1 and isinstance(setup.children[0], str):
            adapter = self.adapters[setup.children[0]]
            h, _, residual = adapter.pre_forward(hidden_states, input_tensor, layer_norm)
            h = adapter(h, residual)[0]
            return adapter.post_forward(h, hidden_states, input_tensor, layer_norm)

        state = BottleneckState(hidden_states, input_tensor, input_tensor, layer_norm)
        state = self._compose(setup, state, 0)
        if state.last is None:
            out = state.hidden_states + state.input_tensor
            return layer_norm(out) if layer_norm is not None else out
        last = self.adapters[state.last]
        return last.post_forward(state.hidden_states, hidden_states, state.input_tensor, layer_norm)

    def _compose(
        self, setup: AdapterCompositionBlock | str, state: BottleneckState, lvl: int
    ) -> BottleneckState:
        if isinstance(setup, str):
            if setup in self.adapters:
                return self._compose_single(setup, state)
            return state
        handler = _COMPOSE_HANDLERS.get(type(setup))
        if handler is None:
            raise CompositionError(
                f"{type(setup).__name__} is not supported by bottleneck adapters."
            )
        return handler(self, setup, state, lvl)

    def _check_child(self, parent: AdapterCompositionBlock, child: Any, lvl: int) -> None:
        if isinstance(parent, Stack) and lvl >= 1:
            raise CompositionError(
                f"Adapter setup is too deep: cannot have {type(child).__name__} at level {lvl}."
            )
        if type(child) not in ALLOWED_NESTINGS[type(parent)]:
            raise CompositionError(
                f"Cannot nest {type(child).__name__} inside {type(parent).__name__}."
            )

    def _pre_block(
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

    def _compose_single(self, name: str, state: BottleneckState) -> BottleneckState:
        adapter = self.adapters[name]
        output, _, up, gate = adapter(state.hidden_states, state.adapter_residual)
        if gate is not None:
            ctx = ForwardContext.get_context()
            if ctx is not None and ctx.output_adapter_gating_scores:
                scores = ctx.adapter_gating_scores.setdefault(name, {})
                scores.setdefault(self.layer_idx, {})[self.location_key] = (
                    gate.detach().squeeze().cpu().numpy()
                )
        return state._replace(hidden_states=output, bottleneck_up=up, last=name)

    def _compose_stack(self, setup: Stack, state: BottleneckState, lvl: int) -> BottleneckState:
        for child in setup:
            if isinstance(child, AdapterCompositionBlock):
                self._check_child(setup, child, lvl)
                state = self._compose(child, state, lvl + 1)
            elif child in self.adapters:
                state = self._pre_block(child, state)
                state = self._compose_single(child, state)
        return state

    def _compose_fuse(self, setup: Fuse, state: BottleneckState, lvl: int) -> BottleneckState:
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
        children: list[BottleneckState] = []
        for child in setup:
            if isinstance(child, AdapterCompositionBlock):
                self._check_child(setup, child, lvl)
                children.append(self._compose(child, state, lvl + 1))
            elif child in self.adapters:
                children.append(self._compose_single(child, state))
        if children:
            # (batch, seq, n_adapters, hidden), contiguous for the fusion layer's projections
            ups = torch.stack([c.bottleneck_up for c in children], dim=2)  # type: ignore[misc]
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

    def _compose_split(self, setup: Split, state: BottleneckState, lvl: int) -> BottleneckState:
        seq_len = state.hidden_states.shape[1]
        if sum(setup.splits) != seq_len:
            raise CompositionError(
                f"The input has sequence length {seq_len}, which differs from the sum of "
                f"splits {setup.splits}."
            )
        state = self._pre_block(setup, state)
        children: list[BottleneckState] = []
        last = None
        start = 0
        for child, size in zip(setup, setup.splits, strict=True):
            part = _slice(state, slice(start, start + size), dim=1)._replace(bottleneck_up=None)
            start += size
            if isinstance(child, AdapterCompositionBlock):
                self._check_child(setup, child, lvl)
                part = self._compose(child, part, lvl + 1)
            elif child in self.adapters:
                part = self._compose_single(child, part)
            children.append(part)
            last = part.last or last
        hidden = torch.cat([c.hidden_states for c in children], dim=1)
        return state._replace(hidden_states=hidden, last=last)

    def _compose_batch_split(
        self, setup: BatchSplit, state: BottleneckState, lvl: int
    ) -> BottleneckState:
        bsz = state.hidden_states.shape[0]
        if sum(setup.batch_sizes) != bsz:
            raise CompositionError(
                f"The batch has size {bsz}, which differs from the sum of batch_sizes "
                f"{setup.batch_sizes}."
            )
        state = self._pre_block(setup, state)
        children: list[BottleneckState] = []
        start = 0
        for child, size in zip(setup, setup.batch_sizes, strict=True):
            part = _slice(state, slice(start, start + size))
            start += size
            if isinstance(child, AdapterCompositionBlock):
                self._check_child(setup, child, lvl)
                part = self._compose(child, part, lvl + 1)
            elif child in self.adapters:
                part = self._compose_single(child, part)
            children.append(part)
        return _concat(children)

    def _compose_parallel(
        self, setup: Parallel, state: BottleneckState, lvl: int
    ) -> BottleneckState:
        # the model replicated its inputs before the first layer (see model_mixin)
        bsz = state.hidden_states.shape[0]
        channels = setup.parallel_channels
        if bsz % channels != 0:
            raise CompositionError(
                "The batch size in a Parallel block must be divisible by the number of channels."
            )
        size = bsz // channels
        state = self._pre_block(setup, state)
        children: list[BottleneckState] = []
        for i, child in enumerate(setup):
            part = _slice(state, slice(i * size, (i + 1) * size))
            if isinstance(child, AdapterCompositionBlock):
                self._check_child(setup, child, lvl)
                part = self._compose(child, part, lvl + 1)
            elif child in self.adapters:
                part = self._compose_single(child, part)
            children.append(part)
        return _concat(children)

    def _compose_average(self, setup: Average, state: BottleneckState, lvl: int) -> BottleneckState:
        state = self._pre_block(setup, state)
        children: list[BottleneckState] = []
        for child in setup:
            if isinstance(child, AdapterCompositionBlock):
                self._check_child(setup, child, lvl)
                children.append(self._compose(child, state, lvl + 1))
            elif child in self.adapters:
                children.append(self._compose_single(child, state))
        if not children:
            return state
        weights = torch.tensor(setup.weights[: len(children)], dtype=state.hidden_states.dtype)
        weights = weights.to(state.hidden_states.device)[:, None, None, None]
        # the reference takes the mean of the weighted outputs (so it divides by N as well)
        stacked = torch.stack([c.hidden_states for c in children], 0) * weights
        return children[0]._replace(hidden_states=stacked.mean(dim=0), last=children[-1].last)


_COMPOSE_HANDLERS: dict[type, Any] = {
    Stack: BottleneckLayerMixin._compose_stack,
    Fuse: BottleneckLayerMixin._compose_fuse,
    Split: BottleneckLayerMixin._compose_split,
    BatchSplit: BottleneckLayerMixin._compose_batch_split,
    Parallel: BottleneckLayerMixin._compose_parallel,
    Average: BottleneckLayerMixin._compose_average,
}

_SWAPPED_CLASSES: dict[tuple[type, str, str, str], type] = {}


def _swap_class(module: nn.Module, spec: ArchitectureSpec) -> None:
    if isinstance(module, BottleneckLayerMixin):
        return
    cls = type(module)
    key = (cls, spec.output_dense, spec.output_dropout, spec.output_layer_norm)
    new_cls = _SWAPPED_CLASSES.get(key)
    if new_cls is None:
        new_cls = type(
            cls.__name__,
            (BottleneckLayerMixin, cls),
            {
                "_dense_name": spec.output_dense,
                "_dropout_name": spec.output_dropout,
                "_ln_name": spec.output_layer_norm,
                "__module__": cls.__module__,
            },
        )
        _SWAPPED_CLASSES[key] = new_cls
    module.__class__ = new_cls


LOCATIONS = (("mh_adapter", "attention_output"), ("output_adapter", "ffn_output"))


def iter_bottleneck_layers(
    base_model: nn.Module, spec: ArchitectureSpec
) -> list[tuple[int, str, BottleneckLayerMixin]]:
    from ..models import resolve_path

    out = []
    for idx, layer in enumerate(resolve_path(base_model, spec.layers)):
        for location_key, attr in LOCATIONS:
            module = resolve_path(layer, getattr(spec, attr))
            out.append((idx, location_key, module))
    return out


def bn_configs_of(config: AdapterConfig) -> list[BnConfig]:
    if isinstance(config, ConfigUnion):
        return [c for c in config.configs if isinstance(c, BnConfig)]
    return [config] if isinstance(config, BnConfig) else []


class BottleneckMethod(AdapterMethod):
    name = "bottleneck"
    supported_compositions = (Stack, Fuse, Split, Parallel, BatchSplit, Average)

    def attach(
        self, base_model: nn.Module, spec: ArchitectureSpec, state: ModelAdaptersConfig
    ) -> None:
        for idx, location_key, module in iter_bottleneck_layers(base_model, spec):
            if not isinstance(module, BottleneckLayerMixin):
                _swap_class(module, spec)
                module.init_bottleneck_layer(location_key, idx, state)  # type: ignore[attr-defined]

    def handles(self, config: AdapterConfig) -> bool:
        return bool(bn_configs_of(config))

    def add_adapter(
        self,
        base_model: nn.Module,
        spec: ArchitectureSpec,
        state: ModelAdaptersConfig,
        name: str,
        config: AdapterConfig,
    ) -> None:
        hidden = getattr(base_model.config, spec.hidden_size_attr)
        for idx, location_key, module in iter_bottleneck_layers(base_model, spec):
            for bn in bn_configs_of(config):
                if not getattr(bn, location_key) or idx in bn.leave_out:
                    continue
                rf = bn.reduction_factor_for(idx)
                cls = ParallelBottleneckAdapter if bn.is_parallel else BottleneckAdapter
                adapter = cls(name, hidden, int(hidden // rf), bn)
                adapter.train(module.training)
                module.adapters[name] = adapter

    def delete_adapter(self, base_model: nn.Module, spec: ArchitectureSpec, name: str) -> None:
        for _, _, module in iter_bottleneck_layers(base_model, spec):
            if name in module.adapters:
                del module.adapters[name]

    def add_fusion(
        self, base_model: nn.Module, spec: ArchitectureSpec, state: ModelAdaptersConfig, name: str
    ) -> None:
        names, fusion_config = state.fusions[name]
        hidden = getattr(base_model.config, spec.hidden_size_attr)
        dropout = fusion_config.dropout_prob
        if dropout is None:
            dropout = getattr(base_model.config, "attention_probs_dropout_prob", 0.0)
        for _, _, module in iter_bottleneck_layers(base_model, spec):
            # a location gets a fusion layer when all fused adapters live there
            if all(n in module.adapters for n in names):
                layer = AdapterFusionLayer(fusion_config, hidden, dropout)
                layer.train(module.training)
                module.adapter_fusion_layer[name] = layer

    def delete_fusion(self, base_model: nn.Module, spec: ArchitectureSpec, name: str) -> None:
        for _, _, module in iter_bottleneck_layers(base_model, spec):
            if name in module.adapter_fusion_layer:
                del module.adapter_fusion_layer[name]
