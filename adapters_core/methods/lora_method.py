"""The LoRA family as an :class:`AdapterMethod`: which layers an adapter wraps, validation,
merging, VeRA's shared matrices and reading the reference's VeRA files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..composition import AdapterCompositionBlock, Average, BatchSplit, MultiTask, Parallel, Stack
from ..configuration import AdapterConfig
from ..configuration.lora_config import LoRAConfig
from ..errors import AdapterConfigError, AdapterError
from .base import AdapterMethod, ModelHandle, iter_linears
from .lora import LinearTarget, _swap, lora_configs_of, lora_layers, module_dtype
from .lora_variants import Vera, VeraShared, compact_vera_state

if TYPE_CHECKING:
    from ..models.spec import ArchitectureSpec


def _shared_container(base_model: nn.Module) -> nn.ModuleDict:
    shared = getattr(base_model, "shared_parameters", None)
    if shared is None:
        shared = nn.ModuleDict()
        base_model.shared_parameters = shared
    return shared


def targets_from_table(model: ModelHandle) -> list[tuple[LinearTarget, nn.Module]]:
    """The linear layers the architecture table lists, with the modules found in the model."""
    out = []
    for site in iter_linears(model):
        lin = site.spec
        path = f"{site.stack.path}.{site.idx}.{lin.path}"  # informative only
        target = LinearTarget(site.idx, path, lin.location, lin.matrix, tuple(lin.fused))
        out.append((target, site.module))
    return out


class LoRAMethod(AdapterMethod):
    """LoRA, IA3, DoRA and VeRA (the reference's ``architecture: lora``)."""

    name = "lora"
    supported_compositions = (Stack, BatchSplit, Parallel, Average, MultiTask)
    config_names = ("lora", "ia3", "dora", "vera", "mtl_lora")

    def __init__(self, targets: Any = None) -> None:
        # targets(base_model) -> [LinearTarget] with paths; by default the architecture table's
        self._targets = targets

    def sites(self, model: ModelHandle) -> list[tuple[LinearTarget, nn.Module]]:
        if self._targets is None:
            return targets_from_table(model)
        from ..models import resolve_path

        return [
            (t, resolve_path(model.base_model, t.path)) for t in self._targets(model.base_model)
        ]

    def supports(self, spec: ArchitectureSpec, config_name: str) -> str | None:
        # fused QKV (DoRA, VeRA) and narrower k/v (VeRA) work here, unlike in the reference
        if not any(stack.linears for stack in spec.stacks):
            return "the architecture table lists no linear layers"
        return None

    def handles(self, config: AdapterConfig) -> bool:
        return bool(lora_configs_of(config))

    def _chosen(self, model: ModelHandle, cfg: LoRAConfig) -> list[tuple[LinearTarget, nn.Module]]:
        return [
            (t, m)
            for t, m in self.sites(model)
            if t.parts_for(cfg) and t.layer_idx not in cfg.leave_out
        ]

    def validate(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        for cfg in lora_configs_of(config):
            sites = self._chosen(model, cfg)
            if not sites:
                raise AdapterConfigError(
                    f"Adapter {name!r} ({cfg.variant}) adapts no layer of this model: check "
                    "attn_matrices, selfattn_lora/intermediate_lora/output_lora and leave_out."
                )
            for _, module in sites:
                if not isinstance(module, nn.Linear | Conv1D):
                    raise AdapterConfigError(
                        f"LoRA-family adapters wrap nn.Linear or Conv1D layers, not "
                        f"{type(module).__name__}."
                    )

    def add_adapter(self, model: ModelHandle, name: str, config: AdapterConfig) -> None:
        for cfg in lora_configs_of(config):
            sites = self._chosen(model, cfg)
            shared = self._make_shared(model.base_model, name, cfg, sites) if cfg.is_vera else None
            for target, module in sites:
                _swap(module)
                if not hasattr(module, "loras"):
                    module.init_lora_layer(target, model.state)  # type: ignore[operator]
                module.add_lora(name, cfg, shared)  # type: ignore[operator]

    def _make_shared(
        self,
        base_model: nn.Module,
        name: str,
        cfg: LoRAConfig,
        sites: list[tuple[LinearTarget, nn.Module]],
    ) -> VeraShared:
        max_in, max_rows = 0, 0
        for target, module in sites:
            weight = module.weight
            in_f, out_f = (
                (weight.shape[0], weight.shape[1])
                if isinstance(module, Conv1D)
                else (weight.shape[1], weight.shape[0])
            )
            rows = out_f // len(target.fused) if target.fused else out_f
            max_in, max_rows = max(max_in, in_f), max(max_rows, rows)
        shared = VeraShared(cfg.r, max_in, max_rows, cfg)
        first = sites[0][1].weight
        shared.to(device=first.device, dtype=module_dtype(cfg, first))
        _shared_container(base_model)[name] = shared
        return shared

    def delete_adapter(self, model: ModelHandle, name: str) -> None:
        for layer in lora_layers(model.base_model):
            layer.delete_lora(name)
        shared = getattr(model.base_model, "shared_parameters", None)
        if shared is not None and name in shared:
            del shared[name]

    def adapter_modules(self, model: ModelHandle, name: str) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {}
        for layer in lora_layers(model.base_model):
            if name in layer.loras:
                target = layer.lora_target
                key = target.location + (f"_{target.attn_key}" if target.attn_key else "")
                key = key + ("_" + "".join(target.fused) if target.fused else "")
                out[f"{layer.layer_idx}.{key}"] = layer.loras[name]
        return out

    def validate_setup(self, model: ModelHandle, setup: AdapterCompositionBlock) -> None:
        """Refuse blocks the family cannot run (Fuse, Split) around its adapters."""
        self.refuse_blocks_around_own(setup, model.state.adapters, "LoRA-family adapters")

    def merge(self, model: ModelHandle, name: str) -> None:
        layers = [m for m in lora_layers(model.base_model) if name in m.loras]
        merged = [m.lora_merged for m in layers if m.lora_merged not in (None, name)]
        if merged:
            raise AdapterError(
                f"Adapter {merged[0]!r} is already merged; call reset_adapter() before merging "
                "another."
            )
        gated = [m for m in layers if m.loras[name].use_gating]
        if gated:
            raise AdapterError("Cannot merge a LoRA module with gating (use_gating=True).")
        for layer in layers:
            layer.merge_lora(name)

    def unmerge(self, model: ModelHandle, name: str) -> None:
        for layer in lora_layers(model.base_model):
            if layer.lora_merged == name:
                layer.reset_lora()

    def pre_load(
        self, model: ModelHandle, name: str, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Read VeRA's diagonal matrices from a reference file (see ``compact_vera_state``)."""
        d_keys = {k[: -len("vera_D")]: k for k in state if k.endswith(f".loras.{name}.vera_D")}
        if not d_keys:
            return state
        state = dict(state)
        for mod_name, module in model.base_model.named_modules():
            if not isinstance(module, Vera) or not mod_name.endswith(f".loras.{name}"):
                continue
            key = next((k for p, k in d_keys.items() if p.endswith(mod_name + ".")), None)
            b_key = key[: -len("vera_D")] + "vera_B" if key else None
            if key is None or b_key not in state:
                continue
            fixed = compact_vera_state(module, state[key], state[b_key])
            state[key], state[b_key] = fixed["vera_D"], fixed["vera_B"]
        return state
