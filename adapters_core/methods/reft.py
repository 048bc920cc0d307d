"""ReFT (LoReFT, NoReFT, DiReFT): low-rank interventions on the hidden states of chosen
positions, after the chosen layers.

Each layer with an intervention holds ``reft_layer.refts.<name>``: two units (prefix and
suffix positions; one with ``tied_weights``), each ``learned_source`` (Linear d -> r) and
``projection`` (Linear d -> r without bias, kept orthogonal by torch's own parametrization
for LoReFT), the reference's weight names. A unit maps a state ``x`` to
``dropout(x + (act(W x + b) - R x) Rᵀ)`` (DiReFT leaves out ``- R x``).

Positions are absolute: the first ``prefix_positions`` non-padding positions of the sequence
(from the attention mask's first 1) and the last ``suffix_positions``. A forward pre-hook on
the module that owns a layer stack (the base model; the encoder and decoder of an
encoder-decoder, since generation runs the encoder on its own) records that stack's attention
mask and how many positions a KV cache already holds, so a cached generation step intervenes on
exactly the positions a full forward over the whole sequence would: prefix positions keep
their effect, and a new token is never mistaken for position 0 (the reference's generate()
does that, so it disagrees with greedy decoding by full forward passes). Suffix positions are
the last positions of the input a forward starts from: a cached step adds no new ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..composition import AdapterCompositionBlock, Stack
from ..configuration import AdapterConfig, ConfigUnion
from ..configuration.reft_config import ReftConfig
from ..errors import CompositionError
from .base import Activation, AdapterMethod, ModelHandle, iter_layers, resolve, site_device_dtype


class ReftUnit(nn.Module):
    """One intervention: ``dropout(x + (act(W x + b) - R x) Rᵀ)``."""

    def __init__(self, hidden_size: int, config: ReftConfig) -> None:
        super().__init__()
        dtype = getattr(torch, config.dtype) if config.dtype else None
        self.orthogonal = config.orthogonality
        self.subtract_projection = config.subtract_projection
        self.learned_source = nn.Linear(hidden_size, config.r, bias=True, dtype=dtype)
        projection = nn.Linear(hidden_size, config.r, bias=False, dtype=dtype)
        if self.orthogonal:
            if projection.weight.dtype in (torch.float16, torch.bfloat16):
                projection = projection.float()  # torch's orthogonal map needs float32
            projection = nn.utils.parametrizations.orthogonal(projection)
        self.projection = projection
        self.non_linearity = Activation(config.non_linearity)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.learned_source.weight.dtype
        h = x.to(dtype)
        rotation = self.projection.weight.to(dtype)  # evaluated once per call
        source = self.non_linearity(self.learned_source(h))
        if self.subtract_projection:
            source = source - nn.functional.linear(h, rotation)
        return self.dropout(h + source @ rotation).to(x.dtype)


class ReftModule(nn.Module):
    """The units of one adapter in one layer (``units.0`` prefix, ``units.1`` suffix)."""

    def __init__(self, hidden_size: int, config: ReftConfig) -> None:
        super().__init__()
        self.prefix_positions = config.prefix_positions
        self.suffix_positions = config.suffix_positions
        self.tied_weights = config.tied_weights
        count = 1 if config.tied_weights else 2
        with torch.random.fork_rng(devices=[]):
            if config.init_weights_seed is not None:
                torch.manual_seed(config.init_weights_seed)
            self.units = nn.ModuleList(ReftUnit(hidden_size, config) for _ in range(count))

    def forward(self, hidden: torch.Tensor, where: StackPositions) -> torch.Tensor:
        bsz, length, dim = hidden.shape
        starts, ends = where.bounds(bsz, length, hidden.device)
        past = where.past
        out = hidden
        if self.prefix_positions:
            count = min(self.prefix_positions, past + length)
            absolute = starts[:, None] + torch.arange(count, device=hidden.device)
            out = self._intervene(out, hidden, absolute - past, self.units[0])
        if self.suffix_positions and past == 0:
            count = min(self.suffix_positions, length)
            absolute = ends[:, None] + torch.arange(-count, 0, device=hidden.device)
            unit = self.units[0] if self.tied_weights else self.units[1]
            out = self._intervene(out, hidden, absolute, unit)
        return out

    @staticmethod
    def _intervene(
        out: torch.Tensor, hidden: torch.Tensor, rel: torch.Tensor, unit: nn.Module
    ) -> torch.Tensor:
        """``out`` with positions ``rel`` (bsz, n; relative to this chunk) set to the unit's
        output on ``hidden``'s states there; positions outside the chunk are left alone."""
        length, dim = hidden.shape[1], hidden.shape[2]
        inside = (rel >= 0) & (rel < length)
        if not bool(inside.any()):
            return out
        index = rel.clamp(0, length - 1)[..., None].expand(-1, -1, dim)
        adapted = unit(hidden.gather(1, index))
        # an add of the change, zero outside the chunk: clamped duplicates write nothing
        delta = (adapted - out.gather(1, index)) * inside[..., None].to(hidden.dtype)
        return out.scatter_add(1, index, delta)


class ReftLayer(nn.Module):
    """Container at ``<layer>.reft_layer`` (the reference's place): ``refts.<name>``."""

    def __init__(self, layer_idx: int, state: Any, owner: nn.Module) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.refts = nn.ModuleDict()
        object.__setattr__(self, "adapters_state", state)
        # a plain attribute (not a submodule) so deepcopy maps it to the copied model
        object.__setattr__(self, "_positions_owner", owner)

    def active(self) -> ReftModule | None:
        if not len(self.refts):
            return None
        state = self.adapters_state
        setup = state.current_setup()
        if setup is None:
            return None
        if state.skip_layers is not None and self.layer_idx in state.skip_layers:
            return None
        first = setup if isinstance(setup, str) else setup.first()
        return self.refts[first] if first in self.refts else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        module = self.active()
        if module is None:
            return hidden
        recorded = self._positions_owner.__dict__.get("_reft_positions")
        where = recorded[-1] if recorded else StackPositions(None, 0)
        return module(hidden, where)


class StackPositions:
    """What a layer stack's forward was called with: its 2-D attention mask and the number of
    positions already in its KV cache."""

    def __init__(self, mask: torch.Tensor | None, past: int) -> None:
        self.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        self.past = past

    def bounds(
        self, bsz: int, length: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Absolute first non-padding position and end (first + count of 1s) per row."""
        mask = self.mask
        if mask is None or mask.shape[0] != bsz:
            zeros = torch.zeros(bsz, dtype=torch.long, device=device)
            return zeros, zeros + self.past + length
        mask = mask.to(device)
        starts = (mask == 1).long().argmax(1)
        return starts, starts + (mask == 1).sum(-1)


def _past_length(kwargs: dict[str, Any]) -> int:
    """Positions already in the KV cache passed to a forward (the cache itself first: it also
    counts positions a method inserted, such as a prompt)."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5: ``cache``
    if cache is not None and hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    position = kwargs.get("cache_position")
    if isinstance(position, torch.Tensor) and position.numel():
        return int(position.reshape(-1)[0])
    return 0


def _record_positions(module: nn.Module, args: tuple, kwargs: dict) -> None:
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
        mask = args[1]
    module.__dict__.setdefault("_reft_positions", []).append(
        StackPositions(mask, _past_length(kwargs))
    )


def _forget_positions(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
    recorded = module.__dict__.get("_reft_positions")
    if recorded:
        recorded.pop()


def _layer_output_hook(module: nn.Module, args: Any, output: Any) -> Any:
    reft_layer = module._modules.get("reft_layer")
    if reft_layer is None or not len(reft_layer.refts):
        return None
    if isinstance(output, torch.Tensor):
        return reft_layer(output)
    return (reft_layer(output[0]), *output[1:])


def reft_configs_of(config: AdapterConfig) -> list[ReftConfig]:
    parts = config.configs if isinstance(config, ConfigUnion) else [config]
    return [c for c in parts if isinstance(c, ReftConfig)]


class ReftMethod(AdapterMethod):
    """LoReFT, NoReFT and DiReFT (the reference's ``architecture: reft``)."""

    name = "reft"
    supported_compositions = (Stack,)
    config_names = ("loreft", "noreft", "direft")

    def handles(self, config: AdapterConfig) -> bool:
        return bool(reft_configs_of(config))

    def _owner(self, model: ModelHandle, stack_path: str) -> nn.Module:
        if not model.spec.is_encoder_decoder:
            return model.base_model
        return resolve(model.base_model, stack_path.rpartition(".")[0])

    def add_adapter(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        (cfg,) = reft_configs_of(config)[:1]
        for idx, stack, layer in iter_layers(model):
            if not cfg.applies_to(idx):
                continue
            container = layer._modules.get("reft_layer")
            if container is None:
                owner = self._owner(model, stack.path)
                if not owner.__dict__.get("_reft_hooked"):
                    owner.register_forward_pre_hook(_record_positions, with_kwargs=True)
                    owner.register_forward_hook(
                        _forget_positions, with_kwargs=True, always_call=True
                    )
                    owner.__dict__["_reft_hooked"] = True
                container = ReftLayer(idx, model.state, owner)
                layer.reft_layer = container
                layer.register_forward_hook(_layer_output_hook)
            module = ReftModule(model.hidden_size, cfg)
            device, dtype = site_device_dtype(layer)
            if device is not None:
                module.to(device=device, dtype=None if cfg.dtype else dtype)
            module.train(layer.training)
            container.refts[name] = module

    def delete_adapter(self, model: ModelHandle, name: str) -> None:
        for _, _, layer in iter_layers(model):
            container = layer._modules.get("reft_layer")
            if container is not None and name in container.refts:
                del container.refts[name]

    def adapter_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {}
        for idx, _, layer in iter_layers(model):
            container = layer._modules.get("reft_layer")
            if container is not None and name in container.refts:
                out[f"{idx}.reft"] = container.refts[name]
        return out

    def validate_setup(self, model: ModelHandle, setup: AdapterCompositionBlock) -> None:
        super().validate_setup(model, setup)
        names = setup.flatten_ordered() if not isinstance(setup, str) else [setup]
        configs = model.state.adapters
        refts = [n for n in names if n in configs and self.handles(configs[n])]
        first = names[0] if names else None
        if refts and (refts[0] != first or len(refts) > 1):
            raise CompositionError(
                f"A ReFT adapter runs only as the first adapter of a setup (as in the "
                f"reference library), and only one per setup: got {names}."
            )

    def pre_save(
        self, model: ModelHandle, name: str, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        # the orthogonal map's base is a view; safetensors needs its own contiguous storage
        return {k: (v.contiguous() if ".refts." in k else v) for k, v in state.items()}
