"""The adapter folder format on disk: safe weight reading and writing, config files, old formats.

Weights are untrusted input (they come from archives on the internet), so both formats are
checked statically before any byte is handed to a deserialiser:

- ``.safetensors``: the header is parsed and validated here (length, JSON, dtypes, shapes,
  offsets) before the safetensors library reads a tensor.
- ``.bin`` (torch pickle): every import the pickle would perform is checked against an
  allow-list of torch's tensor-rebuild functions by an opcode scan, and only then is the file
  given to ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from adapters_core.errors import (
    AdapterConfigError,
    AdapterNotFoundError,
    CorruptWeightsError,
)

# re-exported: reading weights is part of the folder-format API
from .weight_safety import (  # noqa: F401
    ALLOWED_PICKLE_GLOBALS,
    SAFETENSORS_DTYPE_SIZES,
    _reject_duplicate_keys,
    read_state_dict,
    scan_pickle,
    validate_safetensors_header,
)

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "HEAD_CONFIG_NAME",
    "FUSION_CONFIG_NAME",
    "SETUP_CONFIG_NAME",
    "WEIGHTS_NAMES",
    "find_weights_file",
    "weights_file_for_saving",
    "is_peft_folder",
    "read_state_dict",
    "write_state_dict",
    "read_json_config",
    "write_json_config",
    "validate_safetensors_header",
    "scan_pickle",
    "upgrade_legacy_config",
    "upgrade_legacy_keys",
    "is_legacy_config",
]

ADAPTER_CONFIG_NAME = "adapter_config.json"
HEAD_CONFIG_NAME = "head_config.json"
FUSION_CONFIG_NAME = "adapter_fusion_config.json"
SETUP_CONFIG_NAME = "adapter_setup.json"

# (safetensors name, torch pickle name) for each kind of weights file in an adapter folder.
WEIGHTS_NAMES: dict[str, tuple[str, str]] = {
    "adapter": ("adapter.safetensors", "pytorch_adapter.bin"),
    "head": ("model_head.safetensors", "pytorch_model_head.bin"),
    "fusion": ("model_adapter_fusion.safetensors", "pytorch_model_adapter_fusion.bin"),
}

PEFT_WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")

# ---------------------------------------------------------------------------------------------
# Folder helpers
# ---------------------------------------------------------------------------------------------


def find_weights_file(
    folder: str | os.PathLike, kind: str = "adapter", prefer_safetensors: bool = True
) -> Path | None:
    """Return the weights file of ``kind`` ("adapter", "head", "fusion") in ``folder``, or None.

    Both names of the pair are accepted; safetensors wins when both exist unless
    ``prefer_safetensors`` is False.
    """
    if kind not in WEIGHTS_NAMES:
        raise ValueError(f"unknown weights kind {kind!r}; expected one of {sorted(WEIGHTS_NAMES)}")
    safe_name, bin_name = WEIGHTS_NAMES[kind]
    order = (safe_name, bin_name) if prefer_safetensors else (bin_name, safe_name)
    for name in order:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def weights_file_for_saving(
    folder: str | os.PathLike, kind: str = "adapter", use_safetensors: bool = True
) -> Path:
    """The path ``save_*`` should write the weights of ``kind`` to."""
    if kind not in WEIGHTS_NAMES:
        raise ValueError(f"unknown weights kind {kind!r}; expected one of {sorted(WEIGHTS_NAMES)}")
    safe_name, bin_name = WEIGHTS_NAMES[kind]
    return Path(folder) / (safe_name if use_safetensors else bin_name)


def is_peft_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a PEFT adapter (a different format than ours)."""
    folder = Path(folder)
    config_file = folder / ADAPTER_CONFIG_NAME
    if not config_file.is_file():
        return False
    try:
        cfg = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "peft_type" in cfg


# ---------------------------------------------------------------------------------------------
# JSON configs
# ---------------------------------------------------------------------------------------------


def read_json_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object from ``path`` with errors that name the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdapterNotFoundError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise AdapterConfigError(f"expected a JSON file, found a directory: {path}") from None
    except UnicodeDecodeError as exc:
        raise AdapterConfigError(f"{path} is not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise AdapterConfigError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise AdapterConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AdapterConfigError(f"{path} must contain a JSON object, found {type(data).__name__}")
    return data


def write_json_config(config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``config`` as the reference library does: indent 2, sorted keys."""
    path = Path(path)
    text = json.dumps(config, indent=2, sort_keys=True)
    _atomic_write_bytes(path, text.encode("utf-8"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Old files (adapter-transformers v1/v2, adapters < 1.1.0)
# ---------------------------------------------------------------------------------------------

_ACTIVATION_RENAMES = {"gelu": "gelu_new", "gelu_orig": "gelu"}

# Segment renames of weight names written by adapter-transformers v1/v2.
_LEGACY_KEY_SEGMENTS = {
    "attention_text_task_adapters": "adapters",
    "attention_text_lang_adapters": "adapters",
    "layer_text_task_adapters": "adapters",
    "layer_text_lang_adapters": "adapters",
    "invertible_lang_adapters": "invertible_adapters",
}


def is_legacy_config(saved: Mapping[str, Any]) -> bool:
    """True for a saved ``*_config.json`` written by adapter-transformers v1/v2 (no ``version``)."""
    return "version" not in saved


def _parse_version(version: str) -> tuple[str, tuple[int, ...]]:
    """Split ``"adapters.1.0.1"`` into ("adapters", (1, 0, 1)); ``"3.2.1"`` has no library."""
    library = ""
    rest = version
    if version.startswith("adapters."):
        library, rest = "adapters", version[len("adapters.") :]
    numbers: list[int] = []
    for part in rest.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
    return library, tuple(numbers)


def _upgrade_method_config(method: dict[str, Any], legacy: bool, version: str | None) -> None:
    if legacy:
        if method.get("non_linearity") in _ACTIVATION_RENAMES:
            method["non_linearity"] = _ACTIVATION_RENAMES[method["non_linearity"]]
        if "invertible_adapter" in method:
            inv = method.pop("invertible_adapter")
            if isinstance(inv, Mapping):
                method["inv_adapter"] = inv.get("block_type")
                method["inv_adapter_reduction_factor"] = inv.get("reduction_factor")
            elif inv:
                method["inv_adapter"] = inv
    if method.get("architecture") == "lora" and version is not None:
        # adapters < 1.1.0 ignored alpha; keep the outputs those files were trained with.
        library, numbers = _parse_version(version)
        if library == "adapters" and numbers < (1, 1, 0):
            if "r" in method and "alpha" in method and method["r"] != method["alpha"]:
                method["alpha"] = method["r"]
    for sub in method.get("configs") or []:
        if isinstance(sub, dict):
            _upgrade_method_config(sub, legacy, version)


def upgrade_legacy_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a saved config file's content, upgraded to the current format.

    ``cfg`` is the whole file (``{"config": {...}, "name": ..., "version": ...}``). Files without
    ``version`` come from adapter-transformers v1/v2: activation names are renamed
    (gelu -> gelu_new, gelu_orig -> gelu) and ``invertible_adapter: {block_type,
    reduction_factor}`` becomes ``inv_adapter`` / ``inv_adapter_reduction_factor``. LoRA files of
    adapters < 1.1.0 with r != alpha get alpha = r. A bare method config (no ``config`` key but
    method fields) is upgraded as legacy too. Current files come back unchanged (as a copy).
    """
    result = json.loads(json.dumps(cfg))
    legacy = is_legacy_config(result)
    version = result.get("version")
    inner = result.get("config")
    if isinstance(inner, dict):
        _upgrade_method_config(inner, legacy, version)
    elif "config" not in result:
        _upgrade_method_config(result, legacy, version)
    return result


def _upgrade_key(key: str) -> str:
    parts = key.split(".")
    return ".".join(_LEGACY_KEY_SEGMENTS.get(part, part) for part in parts)


def upgrade_legacy_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``state`` with adapter-transformers v1/v2 weight names renamed to current ones.

    ``*.attention_text_task_adapters.*`` (and the ``lang`` / ``layer_`` variants) become
    ``*.adapters.*``; ``invertible_lang_adapters`` becomes ``invertible_adapters``. Current names
    are left alone; two old names mapping to one new name is an error.
    """
    result: dict[str, Any] = {}
    for key, value in state.items():
        new_key = _upgrade_key(key)
        if new_key in result:
            raise CorruptWeightsError(f"weights {key!r} and another key both map to {new_key!r}")
        result[new_key] = value
    return result


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _prepare_for_saving(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prepared: dict[str, torch.Tensor] = {}
    seen_storages: set[tuple[int, int]] = set()
    for key, tensor in tensors.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"expected str -> tensor, got {key!r}: {type(tensor).__name__}")
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        storage_key = (storage.data_ptr(), storage.nbytes())
        # safetensors refuses tensors sharing memory (e.g. a pool referenced by every layer).
        if storage.nbytes() and storage_key in seen_storages:
            tensor = tensor.clone()
        else:
            seen_storages.add(storage_key)
        prepared[key] = tensor
    return prepared


def write_state_dict(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` to ``path``: safetensors for ``.safetensors``, else ``torch.save``.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing memory are copied.
    The file is written to a temporary name and renamed, so readers never see half a file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    prepared = _prepare_for_saving(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            save_file(prepared, tmp, metadata=dict(metadata) if metadata else None)
        else:
            torch.save(prepared, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def iter_weight_files(folder: str | os.PathLike) -> Iterator[tuple[str, Path]]:
    """Yield ``(kind, path)`` for each weights file present in ``folder`` (safetensors first)."""
    for kind in WEIGHTS_NAMES:
        found = find_weights_file(folder, kind)
        if found is not None:
            yield kind, found
