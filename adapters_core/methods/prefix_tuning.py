"""Prefix tuning as an :class:`AdapterMethod`: learned key/value prefixes in every attention layer.

Layout (the reference's weight names):

- the prefixes of all layers live in one pool on the base model,
  ``prefix_tuning.prefix_tunings.<name>.<location_key>`` (``self_prefix``; an encoder-decoder
  has ``encoder_prefix`` for its encoder, ``self_prefix`` and ``cross_prefix`` for its decoder;
  DistilBERT names its one location ``self``). Each entry produces the keys and values of
  ``n_layers`` layers at once: an embedding through a two-layer MLP (``wte``,
  ``control_trans``), or, flat, one parameter ``control_trans``;
- every attention module the architecture table lists (the parent of its ``q`` projection)
  gets a :class:`PrefixTuningLayer` at ``<attention>.prefix_tuning`` that knows its index in the
  pool and holds the optional gates (``prefix_gates.<name>``).

The reference also registers the pool under every layer, so its files repeat each pool tensor
once per layer (``...self_attn.prefix_tuning.pool.prefix_tunings...``), the reason safetensors
fails there. Here the pool exists once; files are written with one copy, and files with the
repeated copies are read too (:meth:`PrefixTuningMethod.pre_load`).

Where the prefixes enter: ``prefix_attention.py`` wraps the model's attention function
(``config._attn_implementation``), which every architecture calls after rotary position
embeddings and after the KV cache update, so prefixes are neither rotated nor cached (as in the
reference) and ``generate()`` with a cache works unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ..composition import AdapterCompositionBlock, BatchSplit, Parallel, Stack
from ..configuration import AdapterConfig, ConfigUnion
from ..configuration.prefix_config import PrefixTuningConfig
from ..context import ForwardContext
from ..errors import AdapterConfigError, AdapterError
from .base import Activation, AdapterMethod, ModelHandle, iter_layers, place_like, resolve
from .engine import ComposableLayer

if TYPE_CHECKING:
    from ..models.spec import ArchitectureSpec, LayerStack

# the reference's name of the single location of these architectures
LOCATION_OVERRIDES = {"distilbert": {"self_prefix": "self"}}


def prefix_configs_of(config: AdapterConfig) -> list[PrefixTuningConfig]:
    if isinstance(config, ConfigUnion):
        return [c for c in config.configs if isinstance(c, PrefixTuningConfig)]
    return [config] if isinstance(config, PrefixTuningConfig) else []


# --- the prefix generators --------------------------------------------------------------------


class _PrefixGenerator(nn.Module):
    """Keys and values of ``n_layers`` attention layers, ``prefix_length`` positions each."""

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        head_dim: int,
        input_size: int,
        config: PrefixTuningConfig,
    ) -> None:
        super().__init__()
        self.n_layers, self.n_heads, self.head_dim = n_layers, n_heads, head_dim
        self.input_size = input_size
        self.config = config
        _seed(config)
        self.dropout = nn.Dropout(config.dropout)
        self._build(n_layers * 2 * n_heads * head_dim)

    def _build(self, width: int) -> None:
        """Create the trained parameters; ``width``: keys and values of every layer per position."""
        raise NotImplementedError

    def key_values(self) -> torch.Tensor:
        """(prefix_length, n_layers * 2, n_heads, head_dim): layer l's keys at 2l, values 2l+1."""
        raise NotImplementedError


class PrefixTuning(_PrefixGenerator):
    """Reparameterised prefixes: ``control_trans(wte)`` gives keys and values of n_layers."""

    def _build(self, width: int) -> None:
        config = self.config
        self.wte = nn.Embedding(config.prefix_length, self.input_size)
        self.control_trans = nn.Sequential(
            nn.Linear(self.input_size, config.bottleneck_size),
            Activation(config.non_linearity.lower()),
            nn.Linear(config.bottleneck_size, width),
        )

    def key_values(self) -> torch.Tensor:
        out = self.control_trans(self.wte.weight)
        return out.view(self.config.prefix_length, self.n_layers * 2, self.n_heads, self.head_dim)

    def eject(self) -> torch.Tensor:
        """The flat parameter vector giving the same prefixes."""
        with torch.no_grad():
            return self.key_values().reshape(-1).clone()


class FlatPrefixTuning(_PrefixGenerator):
    """Prefixes as one trained vector (``control_trans``), no reparameterisation."""

    def _build(self, width: int) -> None:
        self.control_trans = nn.Parameter(torch.randn(self.config.prefix_length * width))

    def key_values(self) -> torch.Tensor:
        return self.control_trans.view(
            self.config.prefix_length, self.n_layers * 2, self.n_heads, self.head_dim
        )


def _seed(config: PrefixTuningConfig) -> None:
    if config.init_weights_seed is not None:
        torch.manual_seed(config.init_weights_seed)


class PrefixTuningPool(nn.Module):
    """``base_model.prefix_tuning``: ``prefix_tunings.<name>.<location_key>`` for every adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix_tunings = nn.ModuleDict()

    def key_values(self, name: str, location_key: str) -> torch.Tensor:
        """This forward's prefixes of one adapter and location (computed once per forward)."""
        module = self.prefix_tunings[name][location_key]
        ctx = ForwardContext.get_context()
        if ctx is None:
            return module.key_values()
        cache = ctx.values.setdefault("prefix_states", {})
        key = (id(self), name, location_key)
        if key not in cache:
            cache[key] = module.key_values()
        return cache[key]


# --- one attention layer ----------------------------------------------------------------------


class PrefixState(NamedTuple):
    hidden_states: torch.Tensor  # keys (batch, kv_heads, length, head_dim)
    values: torch.Tensor
    residual: torch.Tensor | None  # the attention's input (for gates)
    valid: torch.Tensor  # (batch, prefix positions so far): False where padded (Stack of lengths)


class PrefixTuningLayer(ComposableLayer, nn.Module):
    """``<attention>.prefix_tuning``: prepends the active adapters' prefixes to keys/values."""

    supported_compositions = (Stack, BatchSplit, Parallel)

    def __init__(self, location_key: str, layer_idx: int, state: Any, pool: PrefixTuningPool):
        super().__init__()
        self.location_key = location_key
        self.layer_idx = layer_idx
        self.adapters_state = state
        self.prefixes: dict[str, int] = {}
        self.prefix_gates = nn.ModuleDict()
        self.__dict__["pool"] = pool  # shared, not a submodule: saved once, at the base model

    def adapter_modules(self) -> dict[str, int]:
        return self.prefixes

    def prefix_states(self, name: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        pid = self.prefixes[name]
        kv = self.pool.key_values(name, self.location_key)
        # (prefix, heads, dim) -> (batch, heads, prefix, dim)
        keys = kv[:, 2 * pid].transpose(0, 1).unsqueeze(0).expand(batch, -1, -1, -1)
        values = kv[:, 2 * pid + 1].transpose(0, 1).unsqueeze(0).expand(batch, -1, -1, -1)
        dropout = self.pool.prefix_tunings[name][self.location_key].dropout
        if dropout.p > 0 and self.training:
            keys, values = dropout(keys), dropout(values)
        return keys, values

    def compose_single(self, name: str, state: PrefixState, lvl: int) -> PrefixState:
        keys, values = state.hidden_states, state.values
        batch = keys.shape[0]
        pk, pv = self.prefix_states(name, batch)
        gate = self.prefix_gates[name] if name in self.prefix_gates else None
        if gate is not None:
            if state.residual is None:
                raise AdapterError("Prefix gates need the attention input; none was recorded.")
            scores = torch.sigmoid(gate(state.residual)).mean(dim=1)  # (batch, 1 or 2)
            self._store_gate(name, scores)
            pk = pk * scores[:, 0].view(-1, 1, 1, 1)
            pv = pv * scores[:, -1].view(-1, 1, 1, 1)
        pk, pv = pk.to(keys.dtype), pv.to(values.dtype)
        ones = torch.ones(batch, pk.shape[2], dtype=torch.bool, device=keys.device)
        return state._replace(
            hidden_states=torch.cat([pk, keys], dim=2),
            values=torch.cat([pv, values], dim=2),
            valid=torch.cat([ones, state.valid], dim=1),
        )

    def _store_gate(self, name: str, gate: torch.Tensor) -> None:
        ctx = ForwardContext.get_context()
        if ctx is not None and ctx.output_adapter_gating_scores:
            scores = ctx.adapter_gating_scores.setdefault(name, {})
            scores.setdefault(self.layer_idx, {})["prefix"] = gate.detach().squeeze().cpu().numpy()

    def concat_states(self, states: list[Any], dim: int) -> Any:
        """Children with different prefix lengths: pad on the left, masked out."""
        longest = max(s.valid.shape[1] for s in states)
        padded = []
        for s in states:
            pad = longest - s.valid.shape[1]
            if pad:
                k, v = s.hidden_states, s.values
                s = s._replace(
                    hidden_states=torch.cat([k.new_zeros(*k.shape[:2], pad, k.shape[3]), k], 2),
                    values=torch.cat([v.new_zeros(*v.shape[:2], pad, v.shape[3]), v], 2),
                    valid=torch.cat([s.valid.new_zeros(s.valid.shape[0], pad), s.valid], 1),
                )
            padded.append(s)
        return super().concat_states(padded, dim)

    def extend(
        self, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Keys and values with the active prefixes in front, and which prefix positions are
        real; None when no prefix of this layer is active."""
        residual = self.__dict__.pop("_residual", None)
        setup = self.active_setup()
        if setup is None:
            return None
        valid = torch.ones(keys.shape[0], 0, dtype=torch.bool, device=keys.device)
        state = self.compose(setup, PrefixState(keys, values, residual, valid))
        if state.valid.shape[1] == 0:
            return None
        return state.hidden_states, state.values, state.valid


def _record_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of an attention module: keep its input for the prefix gates."""
    layer = module._modules.get("prefix_tuning")
    if layer is not None and len(layer.prefix_gates):
        hidden = kwargs.get("hidden_states", kwargs.get("query", args[0] if args else None))
        layer.__dict__["_residual"] = hidden


# --- the method -------------------------------------------------------------------------------


class PrefixSite(NamedTuple):
    idx: int
    stack: LayerStack
    attention: nn.Module
    location_key: str


def location_key(spec: ArchitectureSpec, stack_name: str, location: str) -> str:
    if location == "crossattn":
        key = "cross_prefix"
    elif spec.is_encoder_decoder and stack_name == "encoder":
        key = "encoder_prefix"
    else:
        key = "self_prefix"
    return LOCATION_OVERRIDES.get(spec.model_type, {}).get(key, key)


def prefix_sites(model: ModelHandle) -> list[PrefixSite]:
    """Every attention module the table lists (the parent of its q projection), in order."""
    out = []
    for idx, stack, layer in iter_layers(model):
        for location in ("selfattn", "crossattn"):
            lin = stack.linear(location, "q")
            if lin is None:
                continue
            attention = resolve(layer, lin.path.rpartition(".")[0])
            out.append(
                PrefixSite(idx, stack, attention, location_key(model.spec, stack.name, location))
            )
    return out


def _wanted(site: PrefixSite, cfg: PrefixTuningConfig) -> bool:
    if site.idx in cfg.leave_out:
        return False
    if site.location_key == "encoder_prefix":
        return cfg.encoder_prefix
    if site.location_key == "cross_prefix":
        return cfg.cross_prefix
    return True


def kv_shape(config: Any, hidden_size: int) -> tuple[int, int]:
    """(key/value heads, head dim) of the model's attention."""
    heads = int(config.num_attention_heads)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None)
    return int(kv_heads), int(head_dim or hidden_size // heads)


class PrefixTuningMethod(AdapterMethod):
    """Prefix tuning (``architecture: prefix_tuning``), also as part of MAM and UniPELT."""

    name = "prefix_tuning"
    supported_compositions = (Stack, BatchSplit, Parallel)
    config_names = ("prefix_tuning", "mam", "unipelt")

    def supports(self, spec: ArchitectureSpec, config_name: str) -> str | None:
        if not any(s.linear("selfattn", "q") for s in spec.stacks):
            return "the architecture table lists no attention projections"
        return spec.unsupported.get(config_name)

    def handles(self, config: AdapterConfig) -> bool:
        return bool(prefix_configs_of(config))

    def validate(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        from .prefix_attention import check_attention

        check_attention(model)
        for cfg in prefix_configs_of(config):
            if not any(_wanted(s, cfg) for s in prefix_sites(model)):
                raise AdapterConfigError(
                    f"Adapter {name!r} (prefix tuning) adds a prefix to no attention layer of "
                    "this model: check leave_out, encoder_prefix and cross_prefix."
                )

    def pool(self, model: ModelHandle) -> PrefixTuningPool:
        pool = model.base_model._modules.get("prefix_tuning")
        if pool is None:
            pool = PrefixTuningPool()
            model.base_model.prefix_tuning = pool
        return pool

    def add_adapter(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        from .prefix_attention import wrap_attention

        cfg = prefix_configs_of(config)[0]
        pool = self.pool(model)
        counts: dict[str, int] = {}
        first_site: dict[str, nn.Module] = {}
        for site in prefix_sites(model):
            if not _wanted(site, cfg):
                continue
            layer = site.attention._modules.get("prefix_tuning")
            if layer is None:
                layer = PrefixTuningLayer(site.location_key, site.idx, model.state, pool)
                site.attention.prefix_tuning = layer
                site.attention.register_forward_pre_hook(_record_input, with_kwargs=True)
            layer.prefixes[name] = counts.get(site.location_key, 0)
            counts[site.location_key] = layer.prefixes[name] + 1
            first_site.setdefault(site.location_key, site.attention)
            if cfg.use_gating:
                gate = nn.Linear(model.hidden_size, 1 if cfg.shared_gating else 2)
                nn.init.normal_(gate.weight, mean=0.0, std=0.02)
                layer.prefix_gates[name] = place_like(gate, site.attention)
        kv_heads, head_dim = kv_shape(model.base_model.config, model.hidden_size)
        cls = FlatPrefixTuning if cfg.flat else PrefixTuning
        group = nn.ModuleDict(
            {
                key: place_like(
                    cls(count, kv_heads, head_dim, model.hidden_size, cfg), first_site[key]
                )
                for key, count in counts.items()
            }
        )
        pool.prefix_tunings[name] = group
        wrap_attention(model)

    def delete_adapter(self, model: ModelHandle, name: str) -> None:
        pool = model.base_model._modules.get("prefix_tuning")
        if pool is not None and name in pool.prefix_tunings:
            del pool.prefix_tunings[name]
        for layer in self.layers(model):
            layer.prefixes.pop(name, None)
            if name in layer.prefix_gates:
                del layer.prefix_gates[name]

    def layers(self, model: ModelHandle) -> list[PrefixTuningLayer]:
        return [m for m in model.base_model.modules() if isinstance(m, PrefixTuningLayer)]

    def adapter_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {}
        pool = model.base_model._modules.get("prefix_tuning")
        if pool is None or name not in pool.prefix_tunings:
            return out
        for layer in self.layers(model):
            if name not in layer.prefixes:
                continue
            if layer.prefixes[name] == 0:  # each pool entry reported once, at its first layer
                out[f"{layer.layer_idx}.{layer.location_key}"] = pool.prefix_tunings[name][
                    layer.location_key
                ]
            if name in layer.prefix_gates:
                out[f"{layer.layer_idx}.{layer.location_key}_gate"] = layer.prefix_gates[name]
        return out

    def validate_setup(self, model: ModelHandle, setup: AdapterCompositionBlock) -> None:
        self.refuse_blocks_around_own(setup, model.state.adapters, "prefix tuning")

    def eject(self, model: ModelHandle, name: str) -> None:
        """Replace the reparameterised prefixes of ``name`` by flat parameters (same outputs)."""
        pool = model.base_model._modules.get("prefix_tuning")
        if pool is None or name not in pool.prefix_tunings:
            raise AdapterError(f"Adapter {name!r} has no prefix tuning to eject.")
        group = pool.prefix_tunings[name]
        for key, module in list(group.items()):
            if isinstance(module, PrefixTuning):
                cfg = module.config.replace(flat=True)
                flat = FlatPrefixTuning(
                    module.n_layers, module.n_heads, module.head_dim, module.input_size, cfg
                )
                flat.control_trans = nn.Parameter(module.eject())
                group[key] = place_like(flat, module)

    # --- files ------------------------------------------------------------------------------

    def pre_load(
        self, model: ModelHandle, name: str, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Read the reference's layout: drop the per-layer copies of the pool (they must equal
        the pool's own entries, which are what is loaded); loaded with ``leave_out``, keep the
        rows of the layers that stay."""
        state = self._drop_copies(name, state)
        return self._keep_layers(model, name, state)

    def _keep_layers(
        self, model: ModelHandle, name: str, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        pool = model.base_model._modules.get("prefix_tuning")
        if pool is None or name not in pool.prefix_tunings:
            return state
        config = prefix_configs_of(model.state.adapters[name])[0]
        everywhere = config.replace(leave_out=[])
        state = dict(state)
        for key, module in pool.prefix_tunings[name].items():
            sites = [s for s in prefix_sites(model) if s.location_key == key]
            candidates = [s.idx for s in sites if _wanted(s, everywhere)]
            kept = [i for i, idx in enumerate(candidates) if idx not in config.leave_out]
            if len(kept) == len(candidates):
                continue
            block = 2 * module.n_heads * module.head_dim  # keys and values of one layer
            rows = torch.cat([torch.arange(i * block, (i + 1) * block) for i in kept])
            for k in list(state):
                if f"prefix_tunings.{name}.{key}.control_trans" not in k:
                    continue
                value = state[k]
                if k.endswith("control_trans.2.weight") or k.endswith("control_trans.2.bias"):
                    if value.shape[0] == len(candidates) * block:
                        state[k] = value[rows]
                elif k.endswith(".control_trans") and value.numel() == (
                    config.prefix_length * len(candidates) * block
                ):
                    state[k] = value.view(config.prefix_length, -1)[:, rows].reshape(-1)
        return state

    def _drop_copies(self, name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        marker = f".prefix_tuning.pool.prefix_tunings.{name}."
        copies = {k: v for k, v in state.items() if marker in k}
        if not copies:
            return state
        pool_keys = {
            k.split(".prefix_tunings.", 1)[1]: v
            for k, v in state.items()
            if marker not in k and f"prefix_tuning.prefix_tunings.{name}." in k
        }
        for key, value in copies.items():
            tail = key.split(".prefix_tunings.", 1)[1]
            if tail not in pool_keys:
                raise AdapterError(
                    f"Adapter file of {name!r} has a layer copy {key} but no pool entry for it."
                )
            if pool_keys[tail].shape != value.shape or not torch.equal(pool_keys[tail], value):
                raise AdapterError(
                    f"Adapter file of {name!r}: the layer copy {key} differs from the pool's "
                    "tensor it should share."
                )
        return {k: v for k, v in state.items() if k not in copies}


def eject_prefix_tuning(model: Any, name: str) -> None:
    """Replace the reparameterised prefixes of adapter ``name`` by flat parameters (same
    outputs, fewer parameters, no MLP at inference); its config becomes ``flat=True``."""
    state = model.adapters_config
    if name not in state.adapters:
        raise AdapterError(f"No adapter named {name!r} in this model.")
    PrefixTuningMethod().eject(model.adapters_handle, name)
    config = state.adapters[name]
    if isinstance(config, ConfigUnion):
        parts = [
            c.replace(flat=True) if isinstance(c, PrefixTuningConfig) else c for c in config.configs
        ]
        state.adapters[name] = ConfigUnion(*parts)
    else:
        state.adapters[name] = config.replace(flat=True)
