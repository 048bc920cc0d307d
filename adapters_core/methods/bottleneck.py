"""Bottleneck adapters (seq_bn / Pfeiffer, double_seq_bn / Houlsby, par_bn, AdapterPlus).

The modules themselves and the method; where they run (class swap or hooks, per the
architecture table) is in :mod:`.bottleneck_sites`. Module and parameter names equal the
reference library's, so weights interchange:
``<layer>.output.adapters.<name>.adapter_down.0.weight``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..composition import Average, BatchSplit, Fuse, Parallel, Split, Stack
from ..configuration import AdapterConfig, BnConfig, ConfigUnion
from ..errors import AdapterConfigError
from ..kernels import Dropout
from .base import Activation, AdapterMethod, ModelHandle, iter_layers, place_like, resolve
from .bottleneck_sites import BottleneckSite, attach_location
from .fusion import AdapterFusionLayer
from .phm import PHMLayer, check_phm_config, shared_phm_parameters


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

    def __init__(
        self,
        name: str,
        input_size: int,
        down_size: int,
        config: BnConfig,
        shared: nn.ParameterDict | None = None,
    ) -> None:
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

        seq: list[nn.Module] = []
        if self.add_layer_norm_before:
            self.adapter_norm_before = nn.LayerNorm(input_size)
            seq.append(self.adapter_norm_before)
        self.adapter_up: nn.Module
        if config.phm_layer:  # Compacter
            seq.append(PHMLayer(input_size, self.down_size, "down", config, shared))
            self.adapter_up = PHMLayer(self.down_size, input_size, "up", config, shared)
        else:
            seq.append(nn.Linear(input_size, self.down_size))
            self.adapter_up = nn.Linear(self.down_size, input_size)
        seq.append(Activation(config.non_linearity.lower()))
        self.adapter_down = nn.Sequential(*seq)

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
            # PHM layers (Compacter) initialise themselves; init_weights acts on nn.Linear
            ups = [self.adapter_up] if isinstance(self.adapter_up, nn.Linear) else []
            if config.init_weights == "bert":
                for m in [*linears, *ups]:
                    m.weight.normal_(0.0, 0.02, generator=generator)
                    m.bias.zero_()
                if self.add_layer_norm_before:
                    _init_bert(self.adapter_norm_before)
            elif config.init_weights == "mam_adapter":
                for m in linears:
                    bound = 1 / math.sqrt(m.weight.shape[1])  # kaiming_uniform_ with a=sqrt(5)
                    m.weight.uniform_(-bound, bound, generator=generator)
                    m.bias.zero_()
                for m in ups:
                    m.weight.zero_()
                    m.bias.zero_()
            elif config.init_weights == "houlsby":
                for m in [*linears, *ups]:
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
        finish: bool = True,
    ) -> torch.Tensor:
        """The reference's post-adapter step; ``finish=False`` leaves out the original residual
        and norm (a hooked location whose model adds them itself)."""
        if self.original_ln_after and finish:
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
        finish: bool = True,
    ) -> torch.Tensor:
        hidden_states = hidden_states + input_hidden_states
        return super().post_forward(
            hidden_states, input_hidden_states, input_tensor, layer_norm, finish
        )


def bn_configs_of(config: AdapterConfig) -> list[BnConfig]:
    if isinstance(config, ConfigUnion):
        return [c for c in config.configs if isinstance(c, BnConfig)]
    return [config] if isinstance(config, BnConfig) else []


def iter_sites(model: ModelHandle) -> Iterator[tuple[int, str, BottleneckSite]]:
    """(layer number, location key, site) for every attached location."""
    for idx, key, site, _ in _iter_sites_with_layers(model):
        yield idx, key, site


def _iter_sites_with_layers(
    model: ModelHandle,
) -> Iterator[tuple[int, str, BottleneckSite, nn.Module]]:
    for idx, stack, layer in iter_layers(model):
        for loc in stack.locations:
            site = resolve(layer, loc.container)
            if isinstance(site, BottleneckSite):
                yield idx, loc.key, site, layer


class BottleneckMethod(AdapterMethod):
    name = "bottleneck"
    supported_compositions = (Stack, Fuse, Split, Parallel, BatchSplit, Average)
    config_names = (
        "seq_bn",
        "double_seq_bn",
        "par_bn",
        "seq_bn_inv",
        "double_seq_bn_inv",
        "compacter",
        "compacter++",
    )

    def attach(self, model: ModelHandle) -> None:
        for idx, stack, layer in iter_layers(model):
            for loc in stack.locations:
                attach_location(layer, loc, idx, model.state)

    def handles(self, config: AdapterConfig) -> bool:
        return bool(bn_configs_of(config))

    def validate(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        for bn in bn_configs_of(config):
            if bn.phm_layer:
                hidden = model.hidden_size
                factors = {bn.reduction_factor_for(site.idx) for site in iter_layers(model)}
                for rf in factors:
                    check_phm_config(bn, hidden, int(hidden // rf))
                if bn.shared_W_phm and len(factors) > 1:
                    raise AdapterConfigError(
                        "shared_W_phm=True needs one reduction_factor for every layer."
                    )
            for key in ("mh_adapter", "output_adapter", "cross_adapter"):
                if not getattr(bn, key, False):
                    continue
                locs = [s.location(key) for s in model.spec.stacks]
                if not any(locs):
                    raise AdapterConfigError(
                        f"{key}=True: {model.spec.model_type} has no {key} location."
                    )
                hooked = [loc for loc in locs if loc and loc.attach == "hook"]
                if not bn.original_ln_after and hooked:
                    raise AdapterConfigError(
                        "original_ln_after=False is not supported on "
                        f"{model.spec.model_type}: its layers add the residual themselves."
                    )

    def add_adapter(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        hidden = model.hidden_size
        shared = self._add_shared(model, name, config)
        for idx, location_key, site, layer in _iter_sites_with_layers(model):
            for bn in bn_configs_of(config):
                if not getattr(bn, location_key, False) or idx in bn.leave_out:
                    continue
                rf = bn.reduction_factor_for(idx)
                cls = ParallelBottleneckAdapter if bn.is_parallel else BottleneckAdapter
                adapter = cls(name, hidden, int(hidden // rf), bn, shared)
                site.adapters[name] = place_like(adapter, layer)

    def _add_shared(
        self, model: ModelHandle, name: str, config: AdapterConfig
    ) -> nn.ParameterDict | None:
        """Compacter's tensors shared by all layers: ``<base>.shared_parameters.<name>``."""
        phm = [bn for bn in bn_configs_of(config) if bn.phm_layer]
        if not phm or not (phm[0].shared_phm_rule or phm[0].shared_W_phm):
            return None
        base = model.base_model
        if not isinstance(getattr(base, "shared_parameters", None), nn.ModuleDict):
            base.shared_parameters = nn.ModuleDict()
        hidden = model.hidden_size
        params = shared_phm_parameters(
            phm[0], hidden, int(hidden // phm[0].reduction_factor_for(0))
        )
        base.shared_parameters[name] = place_like(params, base)
        return params

    def delete_adapter(self, model: ModelHandle, name: str) -> None:
        for found in _modules_named(model, name, "adapters").values():
            del found.owner[name]
        if self._shared_of(model, name) is not None:
            del model.base_model.shared_parameters[name]

    def _shared_of(self, model: ModelHandle, name: str) -> nn.Module | None:
        """Compacter's shared tensors of adapter ``name`` (other methods, such as VeRA, keep
        theirs in the same container: only a PHM config's entry is this method's)."""
        shared = getattr(model.base_model, "shared_parameters", None)
        config = model.state.adapters.get(name)
        if not isinstance(shared, nn.ModuleDict) or name not in shared or config is None:
            return None
        return shared[name] if any(bn.phm_layer for bn in bn_configs_of(config)) else None

    def adapter_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        out = {k: v.module for k, v in _modules_named(model, name, "adapters").items()}
        shared = self._shared_of(model, name)
        if shared is not None:
            out["-1.shared"] = shared  # model-wide tensors, as the reference reports them
        return out

    def add_fusion(self, model: ModelHandle, name: str) -> None:
        names, fusion_config = model.state.fusions[name]
        dropout = fusion_config.dropout_prob
        if dropout is None:
            dropout = getattr(model.base_model.config, "attention_probs_dropout_prob", 0.0)
        for _, _, site, layer in _iter_sites_with_layers(model):
            # a location gets a fusion layer when all fused adapters live there
            if all(n in site.adapters for n in names):
                fusion = AdapterFusionLayer(fusion_config, model.hidden_size, dropout)
                site.adapter_fusion_layer[name] = place_like(fusion, layer)

    def delete_fusion(self, model: ModelHandle, name: str) -> None:
        for found in _modules_named(model, name, "adapter_fusion_layer").values():
            del found.owner[name]

    def fusion_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        return {k: v.module for k, v in _modules_named(model, name, "adapter_fusion_layer").items()}


class _Found(NamedTuple):
    owner: nn.ModuleDict
    module: nn.Module


def _modules_named(model: ModelHandle, name: str, attr: str) -> dict[str, _Found]:
    """``{"<layer>.<location>": (its ModuleDict, the module)}`` for ``attr`` = adapters or
    adapter_fusion_layer."""
    out = {}
    for idx, key, site in iter_sites(model):
        owner = getattr(site, attr)
        if name in owner:
            out[f"{idx}.{key}"] = _Found(owner, owner[name])
    return out
