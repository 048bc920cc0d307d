"""Saving and loading adapters, fusions and whole setups (the reference's file layout).

Mixed into :class:`~adapters_core.model_mixin.ModelAdaptersMixin`; it reads the model's adapter
state and delegates method-specific tensor handling (``pre_save`` / ``pre_load``) to the
methods. Weight-safety checks for untrusted files are in :mod:`adapters_core.weight_safety`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import loading
from .composition import AdapterCompositionBlock, Fuse, Stack
from .configuration import AdapterConfig
from .errors import AdapterConfigError, AdapterError, AdapterNotFoundError, CompositionError
from .methods import METHODS
from .methods.base import iter_layers
from .weights import (
    adapter_filter,
    collect,
    fusion_filter,
    load_strict,
    rename_adapter_keys,
    rename_prefix_segment,
    static_head_filter,
)

logger = logging.getLogger(__name__)

# The on-disk format version written into every config file: the reference library's, so
# that adapters saved here load there (it parses this field).
FORMAT_VERSION = "adapters.1.3.0"

SetupArg = AdapterCompositionBlock | str | list | None


def _model_name(model: nn.Module) -> str | None:
    return getattr(model.config, "name_or_path", None) or None


def _as_fuse(adapter_names: Fuse | Iterable[str] | str, name: str | None) -> Fuse:
    if isinstance(adapter_names, Fuse):
        if name and name != adapter_names.name:
            return Fuse(*adapter_names.children, name=name)
        return adapter_names
    if isinstance(adapter_names, str):
        names = adapter_names.split(",")
    else:
        names = list(adapter_names)
    return Fuse(*names, name=name)


def _fuse_names(setup: Any) -> list[str]:
    if isinstance(setup, str):
        return []
    out = [setup.name] if isinstance(setup, Fuse) else []
    for child in setup:
        out += [n for n in _fuse_names(child) if n not in out]
    return out


class AdapterPersistenceMixin:
    """save_adapter / load_adapter and friends; expects the ModelAdaptersMixin attributes."""

    # (attributes adapters_config, adapters_spec, adapters_handle: see ModelAdaptersMixin;
    # not annotated here: transformers evaluates the annotations of a model's bases)

    # --- saving ------------------------------------------------------------------------------

    def _file_meta(self, name: str | None) -> dict[str, Any]:
        return {
            "hidden_size": getattr(self.config, self.adapters_spec.hidden_size_attr),  # type: ignore[attr-defined]
            "model_class": type(self).__name__,
            "model_name": _model_name(self),  # type: ignore[arg-type]
            "model_type": self.config.model_type,  # type: ignore[attr-defined]
            "name": name,
            "version": FORMAT_VERSION,
        }

    def save_adapter(
        self,
        save_directory: str | os.PathLike,
        adapter_name: str,
        with_head: bool = True,
        meta_dict: Mapping[str, Any] | None = None,
        use_safetensors: bool = True,
        format: str = "adapters",
    ) -> None:
        """Write ``adapter_config.json`` and the weights (safetensors unless told otherwise).

        ``format="peft"`` writes PEFT's folder format instead (LoRA and IA3; no head)."""
        if adapter_name not in self.adapters_config.adapters:
            raise AdapterNotFoundError(f"No adapter named {adapter_name!r} in this model.")
        if format == "peft":
            from .peft_format import save_peft_adapter

            save_peft_adapter(self, save_directory, adapter_name)  # type: ignore[arg-type]
            return
        if format != "adapters":
            raise AdapterConfigError(f"Unknown format {format!r}: 'adapters' or 'peft'.")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        content = {"config": self.adapters_config.adapters[adapter_name].to_dict()}
        content.update(self._file_meta(adapter_name))
        for key, value in (meta_dict or {}).items():
            content.setdefault(key, value)
        loading.write_json_config(content, folder / loading.ADAPTER_CONFIG_NAME)
        state = collect(self, adapter_filter(adapter_name))  # type: ignore[arg-type]
        config = self.adapters_config.adapters[adapter_name]
        for method in METHODS:
            if method.handles(config):
                state = method.pre_save(self.adapters_handle, adapter_name, state)
        loading.write_state_dict(
            state, loading.weights_file_for_saving(folder, "adapter", use_safetensors)
        )
        if with_head:
            self._save_head_with_adapter(folder, adapter_name, use_safetensors)

    def _save_head_with_adapter(
        self, folder: Path, adapter_name: str, use_safetensors: bool
    ) -> None:
        # a task-specific HF class saves its static head; the flex mixin overrides this
        if not self._has_prefix():
            return
        state = collect(self, static_head_filter(self.adapters_spec.base_model_prefix))  # type: ignore[arg-type]
        if not state:
            return
        content = self._file_meta(None)
        content["config"] = None
        content["num_labels"] = getattr(self.config, "num_labels", None)  # type: ignore[attr-defined]
        loading.write_json_config(content, folder / loading.HEAD_CONFIG_NAME)
        loading.write_state_dict(
            state, loading.weights_file_for_saving(folder, "head", use_safetensors)
        )

    def save_adapter_fusion(
        self,
        save_directory: str | os.PathLike,
        adapter_names: Fuse | list[str] | str,
        with_head: bool | str = False,
        meta_dict: Mapping[str, Any] | None = None,
        use_safetensors: bool = True,
    ) -> None:
        fusion_name = (
            adapter_names if isinstance(adapter_names, str) else _as_fuse(adapter_names, None).name
        )
        if fusion_name not in self.adapters_config.fusions:
            raise AdapterNotFoundError(f"No fusion named {fusion_name!r} in this model.")
        names, fusion_config = self.adapters_config.fusions[fusion_name]
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        content: dict[str, Any] = {"adapter_names": list(names), "config": fusion_config.to_dict()}
        content.update(self._file_meta(fusion_name))
        for key, value in (meta_dict or {}).items():
            content.setdefault(key, value)
        loading.write_json_config(content, folder / loading.FUSION_CONFIG_NAME)
        state = collect(self, fusion_filter(fusion_name))  # type: ignore[arg-type]
        loading.write_state_dict(
            state, loading.weights_file_for_saving(folder, "fusion", use_safetensors)
        )
        if with_head:
            head = with_head if isinstance(with_head, str) else fusion_name
            save_head = getattr(self, "save_head", None)
            if save_head is not None and head in getattr(self, "heads", {}):
                save_head(folder, head, use_safetensors=use_safetensors)

    def save_all_adapters(
        self,
        save_directory: str | os.PathLike,
        with_head: bool = True,
        meta_dict: Mapping[str, Any] | None = None,
        use_safetensors: bool = True,
    ) -> None:
        """One sub-folder per adapter (the layout of an AdapterTrainer checkpoint)."""
        for name in self.adapters_config.adapters:
            self.save_adapter(
                Path(save_directory) / name,
                name,
                with_head=with_head,
                meta_dict=meta_dict,
                use_safetensors=use_safetensors,
            )

    def save_all_adapter_fusions(
        self, save_directory: str | os.PathLike, use_safetensors: bool = True
    ) -> None:
        for name in self.adapters_config.fusions:
            self.save_adapter_fusion(
                Path(save_directory) / name, name, use_safetensors=use_safetensors
            )

    # --- loading -----------------------------------------------------------------------------

    def _resolve_folder(
        self,
        identifier: str | os.PathLike,
        config: Any,
        version: str | None,
        model_name: str | None,
    ) -> Path:
        if os.path.isdir(identifier):
            return Path(identifier)
        from . import hub  # lazy: network code is only needed for identifiers and URLs

        folder = hub.resolve_adapter_path(
            str(identifier),
            config=config,
            version=version,
            model_name=model_name or _model_name(self),  # type: ignore[arg-type]
        )
        return Path(folder)

    def load_adapter(
        self,
        adapter_name_or_path: str | os.PathLike,
        config: Any = None,
        version: str | None = None,
        model_name: str | None = None,
        load_as: str | None = None,
        with_head: bool = True,
        set_active: bool = False,
        leave_out: list[int] | None = None,
        **kwargs: Any,
    ) -> str:
        """Load an adapter from a folder, URL or Hub identifier; returns its name in the model."""
        folder = self._resolve_folder(adapter_name_or_path, config, version, model_name)
        if loading.is_peft_folder(folder):
            from .peft_format import load_peft_adapter

            return load_peft_adapter(self, folder, load_as, set_active, leave_out)  # type: ignore[arg-type]
        config_path = folder / loading.ADAPTER_CONFIG_NAME
        if not config_path.is_file():
            raise AdapterNotFoundError(
                f"No {loading.ADAPTER_CONFIG_NAME} in {folder}: not an adapter folder."
            )
        saved = loading.upgrade_legacy_config(loading.read_json_config(config_path))
        if not isinstance(saved.get("config"), Mapping):
            raise AdapterConfigError(f"{config_path} has no 'config' object.")
        saved_name = saved.get("name") or folder.name
        name = load_as or saved_name
        adapter_config = AdapterConfig.load(saved["config"])
        if leave_out is not None:
            adapter_config = adapter_config.replace(leave_out=list(leave_out))
        weights_path = loading.find_weights_file(folder, "adapter")
        if weights_path is None:
            raise AdapterNotFoundError(f"No adapter weights file in {folder}.")
        state = loading.read_state_dict(weights_path)
        if loading.is_legacy_config(saved) or any(
            "_text_" in k or "invertible_lang" in k for k in state
        ):
            state = loading.upgrade_legacy_keys(state)
        state = rename_adapter_keys(state, saved_name, name)
        if leave_out:
            state = self._drop_layers(state, set(leave_out))
        existing = self.adapters_config.adapters.get(name)
        if existing is not None and existing != adapter_config:
            raise AdapterError(
                f"An adapter named {name!r} with a different config already exists; "
                "delete it or use load_as."
            )
        added = existing is None
        if added:
            self.add_adapter(name, adapter_config)
        for method in METHODS:
            if method.handles(adapter_config):
                state = method.pre_load(self.adapters_handle, name, state)
        try:
            load_strict(
                self,  # type: ignore[arg-type]
                state,
                adapter_filter(name),
                self.adapters_spec.base_model_prefix,
                f"adapter {name!r} from {weights_path}",
            )
        except Exception:
            if added:
                self.delete_adapter(name)
            raise
        if with_head and (folder / loading.HEAD_CONFIG_NAME).is_file():
            self._load_head_with_adapter(folder, name)
        if set_active:
            self.set_active_adapters(name)
        return name

    def _drop_layers(
        self, state: dict[str, torch.Tensor], layers: set[int]
    ) -> dict[str, torch.Tensor]:
        """Leave out the keys of modules inside the given layers (the reference's numbering)."""
        base = self.adapter_base_model
        paths = {id(m): n for n, m in base.named_modules()}
        prefixes = tuple(
            paths[id(layer)] + "."
            for idx, _, layer in iter_layers(self.adapters_handle)
            if idx in layers
        )
        model_prefix = self.adapters_spec.base_model_prefix + "."

        def inside(key: str) -> bool:
            rel = key[len(model_prefix) :] if key.startswith(model_prefix) else key
            return rel.startswith(prefixes)

        return {k: v for k, v in state.items() if not inside(k)}

    def _load_head_with_adapter(self, folder: Path, adapter_name: str) -> None:
        saved = loading.read_json_config(folder / loading.HEAD_CONFIG_NAME)
        if saved.get("config") is not None:
            logger.warning(
                "Ignoring the flexible head in %s: this model has a static head.", folder
            )
            return
        if saved.get("model_class") != type(self).__name__:
            logger.warning(
                "Ignoring the head in %s: saved from %s, this model is %s.",
                folder,
                saved.get("model_class"),
                type(self).__name__,
            )
            return
        path = loading.find_weights_file(folder, "head")
        if path is None:
            raise AdapterNotFoundError(f"No head weights file in {folder}.")
        state = loading.read_state_dict(path)
        load_strict(
            self,  # type: ignore[arg-type]
            state,
            static_head_filter(self.adapters_spec.base_model_prefix),
            self.adapters_spec.base_model_prefix,
            f"the head from {path}",
        )

    def load_adapter_fusion(
        self,
        adapter_fusion_name_or_path: str | os.PathLike,
        load_as: str | None = None,
        set_active: bool = False,
        with_head: bool = True,
        **kwargs: Any,
    ) -> str:
        """Load a fusion layer; its adapters must be loaded first."""
        folder = Path(adapter_fusion_name_or_path)
        config_path = folder / loading.FUSION_CONFIG_NAME
        if not config_path.is_file():
            raise AdapterNotFoundError(f"No {loading.FUSION_CONFIG_NAME} in {folder}.")
        saved = loading.read_json_config(config_path)
        names = saved.get("adapter_names")
        if not isinstance(names, list) or not names:
            raise AdapterConfigError(f"{config_path} has no adapter_names list.")
        saved_name = saved.get("name") or ",".join(names)
        fusion_name = load_as or saved_name
        fuse = Fuse(*names, name=fusion_name if fusion_name != ",".join(names) else None)
        self.add_adapter_fusion(fuse, saved.get("config"), overwrite_ok=True)
        path = loading.find_weights_file(folder, "fusion")
        if path is None:
            raise AdapterNotFoundError(f"No fusion weights file in {folder}.")
        state = rename_prefix_segment(
            loading.read_state_dict(path), "adapter_fusion_layer", saved_name, fusion_name
        )
        try:
            load_strict(
                self,  # type: ignore[arg-type]
                state,
                fusion_filter(fusion_name),
                self.adapters_spec.base_model_prefix,
                f"fusion {fusion_name!r} from {path}",
            )
        except Exception:
            self.delete_adapter_fusion(fusion_name)
            raise
        load_head = getattr(self, "load_head", None)
        if with_head and load_head is not None and (folder / loading.HEAD_CONFIG_NAME).is_file():
            load_head(folder)
        if set_active:
            self.set_active_adapters(fuse)
        return fusion_name

    # --- whole setups ----------------------------------------------------------------------

    def save_adapter_setup(
        self,
        save_directory: str | os.PathLike,
        adapter_setup: SetupArg,
        head_setup: Any = None,
        use_safetensors: bool = True,
    ) -> None:
        """Save a composition with its adapters, fusions and heads (``adapter_setup.json``)."""
        setup = self._parse_setup(adapter_setup)
        if setup is None:
            raise CompositionError("save_adapter_setup needs a setup.")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name in setup.flatten_ordered():
            self.save_adapter(folder / name, name, with_head=False, use_safetensors=use_safetensors)
        for fusion_name in _fuse_names(setup):
            self.save_adapter_fusion(
                folder / fusion_name, fusion_name, use_safetensors=use_safetensors
            )
        heads = [head_setup] if isinstance(head_setup, str) else list(head_setup or [])
        if isinstance(head_setup, AdapterCompositionBlock):
            heads = head_setup.flatten_ordered()
        for head in heads:
            self.save_head(folder / head, head, use_safetensors=use_safetensors)  # type: ignore[attr-defined]
        head_json = (
            head_setup.to_dict() if isinstance(head_setup, AdapterCompositionBlock) else head_setup
        )
        loading.write_json_config(
            {"adapter_setup": setup.to_dict(), "head_setup": head_json, "version": FORMAT_VERSION},
            folder / loading.SETUP_CONFIG_NAME,
        )

    def load_adapter_setup(
        self, adapter_setup_name_or_path: str | os.PathLike, set_active: bool = False, **kwargs: Any
    ) -> tuple[AdapterCompositionBlock, Any]:
        """Load a folder written by :meth:`save_adapter_setup`; returns (setup, head_setup)."""
        folder = self._resolve_folder(adapter_setup_name_or_path, None, kwargs.get("version"), None)
        saved = loading.read_json_config(folder / loading.SETUP_CONFIG_NAME)
        setup = AdapterCompositionBlock.from_dict(saved["adapter_setup"])
        if isinstance(setup, str):
            setup = Stack(setup)
        for name in setup.flatten_ordered():
            self.load_adapter(folder / name, load_as=name, with_head=False)
        for fusion_name in _fuse_names(setup):
            self.load_adapter_fusion(folder / fusion_name, with_head=False)
        head_setup = saved.get("head_setup")
        if isinstance(head_setup, dict):
            head_setup = AdapterCompositionBlock.from_dict(head_setup)
        heads = [head_setup] if isinstance(head_setup, str) else list(head_setup or [])
        for head in heads:
            self.load_head(folder / head, load_as=head)  # type: ignore[attr-defined]
        if set_active:
            self.set_active_adapters(setup)
            if head_setup is not None and hasattr(self, "active_head"):
                self.active_head = head_setup
        return setup, head_setup
