"""Adapter support on a transformers model: adding, activating, training, saving, loading.

``ModelAdaptersMixin`` is mixed into the flexible-head classes (``BertAdapterModel``...) and,
by :func:`init`, into any supported Hugging Face model instance (class swap, same class name).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from . import hub_push, kernels
from .composition import (
    AdapterCompositionBlock,
    Fuse,
    parse_composition,
)
from .configuration import AdapterConfig, AdapterFusionConfig, ConfigUnion
from .context import AdapterSetup, open_on_every_forward
from .errors import (
    AdapterConfigError,
    AdapterError,
    AdapterNotFoundError,
    CompositionError,
)
from .methods import METHODS
from .methods.base import ModelHandle
from .models import ArchitectureSpec, get_spec
from .persistence import (
    AdapterPersistenceMixin,
    SetupArg,
    _as_fuse,
    _fuse_names,
)
from .weights import (
    adapter_filter,
    fusion_filter,
)

logger = logging.getLogger(__name__)


class ModelAdaptersConfig:
    """The adapters of one model: configs, fusions and the active setup (shared by all layers)."""

    def __init__(self) -> None:
        self.adapters: dict[str, AdapterConfig] = {}
        self.fusions: dict[str, tuple[list[str], AdapterFusionConfig]] = {}
        self.active_setup: AdapterCompositionBlock | None = None
        self.active_flat: frozenset[str] = frozenset()
        self.skip_layers: list[int] | None = None
        # adapters folded into the model's weights (merge_adapter), in merge order
        self.merged: list[str] = []

    def fusion_config(self, name: str) -> AdapterFusionConfig | None:
        entry = self.fusions.get(name)
        return entry[1] if entry else None

    def set_active(self, setup: AdapterCompositionBlock | None, skip_layers: Any = None) -> None:
        self.active_setup = setup
        self.active_flat = frozenset(setup.flatten() if setup is not None else ())
        self.skip_layers = list(skip_layers) if skip_layers else None

    def to_dict(self) -> dict[str, Any]:
        """The ``adapters`` block a full ``save_pretrained`` writes into config.json."""
        from .configuration import get_adapter_config_hash

        config_map: dict[str, Any] = {}
        adapters: dict[str, str] = {}
        for name, cfg in self.adapters.items():
            key = get_adapter_config_hash(cfg)
            config_map[key] = cfg.to_dict()
            adapters[name] = key
        fusion_map: dict[str, Any] = {}
        fusions: dict[str, str] = {}
        names: dict[str, list[str]] = {}
        for name, (fused, cfg) in self.fusions.items():
            key = get_adapter_config_hash(cfg)
            fusion_map[key] = cfg.to_dict()
            fusions[name] = key
            names[name] = list(fused)
        return {
            "adapters": adapters,
            "config_map": config_map,
            "fusions": fusions,
            "fusion_config_map": fusion_map,
            "fusion_name_map": names,
        }

    def current_setup(self) -> AdapterCompositionBlock | None:
        ctx = AdapterSetup.get_context()
        return ctx.adapter_setup if ctx is not None else self.active_setup


def _replicate_for_parallel(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Forward pre-hook of the base model: copy the batch once per Parallel channel."""
    setup = module.adapters_config.current_setup()
    if setup is None:
        return None
    channels = setup.parallel_channels
    if channels <= 1:
        return None
    ref = kwargs.get("input_ids")
    if ref is None:
        ref = kwargs.get("inputs_embeds")
    if ref is None and args and isinstance(args[0], torch.Tensor):
        ref = args[0]
    if ref is None:
        return None
    bsz = ref.shape[0]

    def rep(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == bsz:
            return value.repeat(channels, *([1] * (value.dim() - 1)))
        return value

    return tuple(rep(a) for a in args), {k: rep(v) for k, v in kwargs.items()}


class ModelAdaptersMixin(AdapterPersistenceMixin):
    """Adapter management; expects ``self.config`` and ``self.base_model`` (a PreTrainedModel)."""

    adapters_config: ModelAdaptersConfig
    adapters_spec: ArchitectureSpec
    # Upload to a Hugging-Face-compatible hub, as the reference library's method (hub_push.py).
    push_adapter_to_hub = hub_push.push_adapter_to_hub

    # --- setup ---------------------------------------------------------------------------

    def _init_adapters(
        self, spec: ArchitectureSpec | None = None, cpu_kernels: bool | None = None
    ) -> None:
        if "adapters_config" in self.__dict__:
            return
        spec = spec or get_spec(self.config.model_type)  # type: ignore[attr-defined]
        state = ModelAdaptersConfig()
        object.__setattr__(self, "adapters_spec", spec)
        object.__setattr__(self, "adapters_config", state)
        base = self.adapter_base_model
        if base is not self:
            object.__setattr__(base, "adapters_config", state)
        for method in METHODS:
            method.attach(self.adapters_handle)
        if kernels.enabled(cpu_kernels):
            kernels.attach(self)  # type: ignore[arg-type]
        open_on_every_forward(base)
        base.register_forward_pre_hook(_replicate_for_parallel, with_kwargs=True)

    @property
    def adapters_handle(self) -> ModelHandle:
        """What adapter methods see of this model (base model, table, shared state)."""
        return ModelHandle(self.adapter_base_model, self.adapters_spec, self.adapters_config)

    @property
    def adapter_base_model(self) -> nn.Module:
        return getattr(self, self.adapters_spec.base_model_prefix, self)  # type: ignore[return-value]

    def _has_prefix(self) -> bool:
        return self.adapter_base_model is not self

    # --- adding and deleting -------------------------------------------------------------

    def add_adapter(
        self,
        adapter_name: str,
        config: AdapterConfig | Mapping[str, Any] | str | None = None,
        overwrite_ok: bool = False,
        set_active: bool = False,
    ) -> None:
        """Add a new adapter (``config``: object, dict or string, default ``"seq_bn"``)."""
        _check_name(adapter_name)
        if adapter_name in self.adapters_config.adapters:
            if not overwrite_ok:
                raise AdapterError(f"An adapter named {adapter_name!r} already exists.")
            self.delete_adapter(adapter_name)
        cfg = AdapterConfig.load(config)
        parts = cfg.configs if isinstance(cfg, ConfigUnion) else [cfg]
        unhandled = [p for p in parts if not any(m.handles(p) for m in METHODS)]
        if unhandled:
            raise AdapterConfigError(
                f"No adapter method in adapters_core builds {type(unhandled[0]).__name__}."
            )
        handle = self.adapters_handle
        methods = [m for m in METHODS if m.handles(cfg)]
        for method in methods:
            method.validate(handle, adapter_name, cfg)
        self.adapters_config.adapters[adapter_name] = cfg
        try:
            for method in methods:
                method.add_adapter(handle, adapter_name, cfg)
        except Exception:
            self.delete_adapter(adapter_name)
            raise
        if set_active:
            self.set_active_adapters(adapter_name)

    def adapter_to(
        self, name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """Move (and/or cast) the modules of adapter ``name``."""
        for modules in self.get_adapter(name).values():
            for module in modules.values():
                module.to(device=device, dtype=dtype)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.adapters_config.adapters:
            raise AdapterNotFoundError(f"No adapter named {adapter_name!r} in this model.")
        for fusion_name, (names, _) in list(self.adapters_config.fusions.items()):
            if adapter_name in names:
                self.delete_adapter_fusion(fusion_name)
        for method in METHODS:
            method.delete_adapter(self.adapters_handle, adapter_name)
        del self.adapters_config.adapters[adapter_name]
        active = self.adapters_config.active_setup
        if active is not None and adapter_name in active.flatten():
            self.adapters_config.set_active(None)

    def add_adapter_fusion(
        self,
        adapter_names: Fuse | list[str] | str,
        config: AdapterFusionConfig | Mapping[str, Any] | str | None = None,
        name: str | None = None,
        overwrite_ok: bool = False,
        set_active: bool = False,
    ) -> None:
        """Add a fusion layer over existing adapters (``Fuse("a", "b")``, a list, or ``"a,b"``)."""
        fuse = _as_fuse(adapter_names, name)
        names = [c if isinstance(c, str) else c.last() for c in fuse.children]
        missing = [n for n in fuse.flatten() if n not in self.adapters_config.adapters]
        if missing:
            raise AdapterNotFoundError(f"Cannot fuse unknown adapter(s): {', '.join(missing)}.")
        fusion_name = fuse.name
        if fusion_name in self.adapters_config.fusions:
            if not overwrite_ok:
                raise AdapterError(f"A fusion named {fusion_name!r} already exists.")
            self.delete_adapter_fusion(fusion_name)
        fusion_config = AdapterFusionConfig.load(config)
        self.adapters_config.fusions[fusion_name] = (names, fusion_config)
        for method in METHODS:
            method.add_fusion(self.adapters_handle, fusion_name)
        if set_active:
            self.set_active_adapters(fuse)

    add_fusion = add_adapter_fusion

    def delete_adapter_fusion(self, adapter_names: Fuse | list[str] | str) -> None:
        fusion_name = (
            _as_fuse(adapter_names, None).name
            if not isinstance(adapter_names, str)
            else adapter_names
        )
        if fusion_name not in self.adapters_config.fusions:
            raise AdapterNotFoundError(f"No fusion named {fusion_name!r} in this model.")
        for method in METHODS:
            method.delete_fusion(self.adapters_handle, fusion_name)
        del self.adapters_config.fusions[fusion_name]

    def _restore_adapters_from_config(self) -> None:
        """Re-create the adapters and fusions listed in ``config.adapters`` (full checkpoints)."""
        data = getattr(self.config, "adapters", None)  # type: ignore[attr-defined]
        if not isinstance(data, Mapping):
            return
        config_map = data.get("config_map", {})
        for name, key in data.get("adapters", {}).items():
            if name not in self.adapters_config.adapters:
                self.add_adapter(name, config_map.get(key, key))
        fusion_map = data.get("fusion_config_map", {})
        for name, key in data.get("fusions", {}).items():
            fused = data.get("fusion_name_map", {}).get(name) or name.split(",")
            if name not in self.adapters_config.fusions:
                self.add_adapter_fusion(
                    Fuse(*fused, name=name if name != ",".join(fused) else None),
                    fusion_map.get(key),
                )

    def has_adapters(self) -> bool:
        return bool(self.adapters_config.adapters)

    def get_adapter(self, name: str) -> dict[int, dict[str, nn.Module]]:
        """The modules of adapter ``name``: ``{layer_idx: {location: module}}``."""
        if name not in self.adapters_config.adapters:
            raise AdapterNotFoundError(f"No adapter named {name!r} in this model.")
        out: dict[int, dict[str, nn.Module]] = {}
        handle = self.adapters_handle
        for method in METHODS:
            for key, module in method.adapter_modules(handle, name).items():
                idx, _, location = key.partition(".")
                out.setdefault(int(idx), {})[location] = module
        return out

    def average_adapter(
        self,
        adapter_name: str,
        adapter_list: list[str] | dict[str, float],
        weights: list[float] | None = None,
        combine_strategy: str = "linear",
        normalize_weights: bool = True,
        overwrite_ok: bool = False,
        set_active: bool = False,
        svd_rank: int | None = None,
    ) -> None:
        """Add an adapter as the weighted sum of adapters of one config (``merging.py``)."""
        from .merging import average_adapter

        average_adapter(
            self,  # type: ignore[arg-type]
            adapter_name,
            adapter_list,
            weights=weights,
            combine_strategy=combine_strategy,
            normalize_weights=normalize_weights,
            overwrite_ok=overwrite_ok,
            set_active=set_active,
            svd_rank=svd_rank,
        )

    # --- activation ----------------------------------------------------------------------

    def _parse_setup(self, adapter_setup: SetupArg) -> AdapterCompositionBlock | None:
        setup = parse_composition(adapter_setup, model_type=self.config.model_type)  # type: ignore[attr-defined]
        if setup is None:
            return None
        missing = sorted(n for n in setup.flatten() if n not in self.adapters_config.adapters)
        if missing:
            raise AdapterNotFoundError(
                f"No adapter named {', '.join(map(repr, missing))} in this model."
            )
        handle = self.adapters_handle
        for method in METHODS:
            if any(method.handles(self.adapters_config.adapters[n]) for n in setup.flatten()):
                method.validate_setup(handle, setup)  # type: ignore[arg-type]
        self._check_fusions(setup)
        return setup  # type: ignore[return-value]

    def _check_fusions(self, setup: Any) -> None:
        if isinstance(setup, str):
            return
        if isinstance(setup, Fuse) and setup.name not in self.adapters_config.fusions:
            raise CompositionError(
                f"No fusion layer for {setup}: call add_adapter_fusion({setup}) first."
            )
        for child in setup:
            self._check_fusions(child)

    def set_active_adapters(
        self, adapter_setup: SetupArg, skip_layers: list[int] | None = None
    ) -> None:
        """Activate a setup: a name, a list (Stack), or a composition block."""
        setup = self._parse_setup(adapter_setup)
        self.adapters_config.set_active(setup, skip_layers)
        self._on_setup_activated(setup)

    def _on_setup_activated(self, setup: AdapterCompositionBlock | None) -> None:
        """Hook for the head mixin (activates the matching head)."""

    @property
    def active_adapters(self) -> AdapterCompositionBlock | None:
        return self.adapters_config.active_setup

    @active_adapters.setter
    def active_adapters(self, adapter_setup: SetupArg) -> None:
        self.set_active_adapters(adapter_setup)

    # --- merging -------------------------------------------------------------------------

    def _methods_of(self, name: str) -> list[Any]:
        if name not in self.adapters_config.adapters:
            raise AdapterNotFoundError(f"No adapter named {name!r} in this model.")
        cfg = self.adapters_config.adapters[name]
        return [m for m in METHODS if m.handles(cfg)]

    def share_parameters(
        self,
        adapter_names: Any,
        name: str | None = None,
        reference_adapter_name: str | None = None,
    ) -> None:
        """One A and B per layer for several MTL-LoRA adapters (``MultiTask("a", "b")``, a list
        or ``"a,b"``), copied from ``reference_adapter_name`` (default: the first) and kept at
        ``<layer>.shared_parameters.<name>`` (default name: the adapters joined by commas)."""
        from .methods import mtl_lora

        names = mtl_lora.task_names(adapter_names)
        mtl_lora.share_parameters(
            self.adapters_handle, names, name or ",".join(names), reference_adapter_name or names[0]
        )

    def unshare_parameters(self, adapter_names: Any, name: str | None = None) -> None:
        """Undo :meth:`share_parameters`: each adapter keeps its own copy of the shared A/B."""
        from .methods import mtl_lora

        names = mtl_lora.task_names(adapter_names)
        mtl_lora.unshare_parameters(self.adapters_handle, names, name or ",".join(names))

    def merge_adapter(self, name: str) -> None:
        """Fold adapter ``name`` into the model's weights (methods that support it: LoRA...)."""
        if name in self.adapters_config.merged:
            return
        for method in self._methods_of(name):
            method.merge(self.adapters_handle, name)
        self.adapters_config.merged.append(name)

    def reset_adapter(self, name: str | None = None) -> None:
        """Undo :meth:`merge_adapter` (all merged adapters when ``name`` is None)."""
        names = [name] if name is not None else list(self.adapters_config.merged)
        for n in names:
            for method in self._methods_of(n):
                method.unmerge(self.adapters_handle, n)
            if n in self.adapters_config.merged:
                self.adapters_config.merged.remove(n)

    def eject_prefix_tuning(self, name: str) -> None:
        """Turn the reparameterised prefixes of adapter ``name`` into flat parameters."""
        from .methods.prefix_tuning import eject_prefix_tuning

        eject_prefix_tuning(self, name)

    # --- training ------------------------------------------------------------------------

    def freeze_model(self, freeze: bool = True) -> None:
        """Freeze (or unfreeze) every weight of the base model, adapters included."""
        for p in self.adapter_base_model.parameters():
            p.requires_grad = not freeze

    def _set_trainable(self, keep: Any) -> None:
        for name, p in self.named_parameters():  # type: ignore[attr-defined]
            if keep(name):
                p.requires_grad = True

    def train_adapter(self, adapter_setup: SetupArg, train_embeddings: bool = False) -> None:
        """Freeze everything except the adapters of ``adapter_setup`` and their head(s)."""
        setup = self._parse_setup(adapter_setup)
        if setup is None:
            raise CompositionError("train_adapter needs at least one adapter.")
        for p in self.parameters():  # type: ignore[attr-defined]
            p.requires_grad = False
        filters = [adapter_filter(n) for n in setup.flatten()]
        self._set_trainable(lambda k: any(f(k) for f in filters))
        if train_embeddings:
            get = getattr(self.adapter_base_model, "get_input_embeddings", None)
            if get is not None:
                get().weight.requires_grad = True
        self.set_active_adapters(setup)
        self._unfreeze_heads(setup)

    def train_adapter_fusion(
        self, adapter_setup: SetupArg, unfreeze_adapters: bool = False
    ) -> None:
        """Freeze everything except the fusion layers of ``adapter_setup`` (and its head)."""
        setup = self._parse_setup(adapter_setup)
        if setup is None:
            raise CompositionError("train_adapter_fusion needs a Fuse setup.")
        for p in self.parameters():  # type: ignore[attr-defined]
            p.requires_grad = False
        fusion_names = _fuse_names(setup)
        filters = [fusion_filter(n) for n in fusion_names]
        if unfreeze_adapters:
            filters += [adapter_filter(n) for n in setup.flatten()]
        self._set_trainable(lambda k: any(f(k) for f in filters))
        self.set_active_adapters(setup)
        self._unfreeze_heads(setup)

    def _unfreeze_heads(self, setup: AdapterCompositionBlock) -> None:
        # a task-specific HF class: its head lives outside the base model
        if self._has_prefix():
            prefix = self.adapters_spec.base_model_prefix + "."
            self._set_trainable(lambda k: not k.startswith(prefix) and not k.startswith("heads."))

    # --- summary ---------------------------------------------------------------------------

    def adapter_summary(self, as_dict: bool = False) -> str | list[dict[str, Any]]:
        """Parameter counts per adapter, as in the reference library (% of the base model)."""
        tensors = dict(self.named_parameters())  # type: ignore[attr-defined]
        rows: list[dict[str, Any]] = []
        all_adapter_keys: set[str] = set()
        active = self.adapters_config.active_flat
        for name, cfg in self.adapters_config.adapters.items():
            keep = adapter_filter(name)
            keys = [k for k in tensors if keep(k)]
            all_adapter_keys.update(keys)
            rows.append(
                {
                    "name": name,
                    "architecture": cfg.architecture or "bottleneck",
                    "#param": sum(tensors[k].numel() for k in keys),
                    "train": any(tensors[k].requires_grad for k in keys),
                    "active": name in active,
                }
            )
        base = self.adapter_base_model
        base_prefix = self.adapters_spec.base_model_prefix + "." if self._has_prefix() else ""
        base_total = sum(
            p.numel()
            for k, p in tensors.items()
            if k.startswith(base_prefix) and k not in all_adapter_keys
        )
        if base is self:
            base_total = sum(p.numel() for k, p in tensors.items() if k not in all_adapter_keys)
        for row in rows:
            row["%param"] = 100.0 * row["#param"] / base_total if base_total else 0.0
        rows.append(
            {
                "name": "Full model",
                "#param": base_total,
                "%param": 100.0,
                "train": any(
                    tensors[k].requires_grad
                    for k in tensors
                    if k.startswith(base_prefix) and k not in all_adapter_keys
                ),
            }
        )
        if as_dict:
            return rows
        sep, line = "=" * 80, "-" * 80
        out = [
            sep,
            f"{'Name':<25}{'Architecture':<20}{'#Param':>12}{'%Param':>10}{'Active':>7}{'Train':>6}",
            line,
        ]
        for row in rows[:-1]:
            out.append(
                f"{row['name']:<25}{row['architecture']:<20}{row['#param']:>12,}"
                f"{row['%param']:>10.3f}{int(row['active']):>7}{int(row['train']):>6}"
            )
        full = rows[-1]
        out += [
            line,
            f"{'Full model':<45}{full['#param']:>12,}{full['%param']:>10.3f}{'':>7}{int(full['train']):>6}",
            sep,
        ]
        return "\n".join(out)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "." in name or "," in name:
        raise AdapterConfigError(
            f"Invalid adapter name {name!r}: use a non-empty string without '.' or ','."
        )


_MIXED_CLASSES: dict[type, type] = {}


def init(
    model: nn.Module, adapters_config: Any = None, cpu_kernels: bool | None = None
) -> nn.Module:
    """Add adapter support to a plain Hugging Face model instance (in place; returns it).

    ``BertModel``, ``BertForSequenceClassification``, ``Qwen2ForCausalLM`` ... gain
    ``add_adapter``, ``train_adapter``, ``save_adapter``, ``load_adapter`` and the rest. Weight
    names are those of the reference library for the same class. ``cpu_kernels=False`` keeps
    the model's own dropout and attention (default: on unless ``ADAPTERS_CORE_CPU_KERNELS=0``).
    """
    if isinstance(model, ModelAdaptersMixin):
        return model
    spec = get_spec(model.config.model_type)
    cls = type(model)
    new_cls = _MIXED_CLASSES.get(cls)
    if new_cls is None:
        new_cls = type(cls.__name__, (ModelAdaptersMixin, cls), {"__module__": cls.__module__})
        _MIXED_CLASSES[cls] = new_cls
    model.__class__ = new_cls
    model._init_adapters(spec, cpu_kernels)  # type: ignore[attr-defined]
    return model
