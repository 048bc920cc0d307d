"""What a hosted version serves, whoever brought it here (an upload or the mirror): an adapter
folder made ready to host (every member, both weight formats, the missing one written from tensors
read through the safe path of adapters_core.loading), its deterministic archive, and the
VersionFile rows that /hf/ serves for the version's revision.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub_server import storage
from hub_server.catalog.models import AdapterVersion, VersionFile

if TYPE_CHECKING:  # torch loads only where weights are read: the web process never needs it
    import torch

ADAPTER_CONFIG = "adapter_config.json"
# Config files of an adapter folder, and the weights kind each one needs.
CONFIG_FILES = {
    "adapter_config.json": "adapter",
    "head_config.json": "head",
    "adapter_fusion_config.json": "fusion",
    "adapter_setup.json": None,
}
# Zip members get this timestamp so the same content always gives the same archive bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class FolderError(ValueError):
    """The folder cannot be hosted; the message says why and what to change."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class PreparedFolder:
    """A folder made ready in a temp dir: every member file, both weight formats."""

    root: Path
    members: list[str]
    adapter_config: dict[str, Any]


def prepare_folder(folder: Path, staging: Path) -> PreparedFolder:
    from adapters_core import loading

    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder", "folder")
    if loading.is_peft_folder(folder):
        raise FolderError(
            f"{folder} holds a PEFT adapter (adapter_config.json with peft_type), not an "
            "adapters folder; upload it instead (the upload checks convert it), or convert it "
            "with load_adapter and save_adapter of adapters_core",
            "folder",
        )
    weight_names = {n: kind for kind, pair in loading.WEIGHTS_NAMES.items() for n in pair}
    allowed = set(CONFIG_FILES) | set(weight_names)
    entries = sorted(p.name for p in folder.iterdir())
    unexpected = [n for n in entries if n not in allowed or not (folder / n).is_file()]
    if unexpected:
        raise FolderError(
            f"unexpected entries in the adapter folder: {unexpected}; an adapter folder holds "
            f"only {sorted(allowed)}",
            "folder",
        )
    if ADAPTER_CONFIG not in entries:
        raise FolderError(f"{folder} has no {ADAPTER_CONFIG}", "folder")
    try:
        adapter_config = loading.read_json_config(folder / ADAPTER_CONFIG)
    except Exception as exc:
        raise FolderError(f"{ADAPTER_CONFIG} is not valid: {exc}", "adapter_config") from None

    staging.mkdir(parents=True)
    for entry in entries:
        if entry in CONFIG_FILES:
            shutil.copyfile(folder / entry, staging / entry)
    for config_name, kind in CONFIG_FILES.items():
        if kind is None:
            continue
        safe_name, bin_name = loading.WEIGHTS_NAMES[kind]
        present = [n for n in (safe_name, bin_name) if n in entries]
        if config_name not in entries:
            if present:
                raise FolderError(f"{present[0]} has no {config_name} beside it", "folder")
            continue
        if not present:
            raise FolderError(f"{config_name} has no weights file ({safe_name} or {bin_name})")
        _complete_weights(folder, staging, safe_name, bin_name, present)
    members = sorted(p.name for p in staging.iterdir())
    return PreparedFolder(staging, members, adapter_config)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from adapters_core import AdapterError, loading

    try:
        return loading.read_state_dict(path)
    except AdapterError as exc:
        raise FolderError(f"{path.name}: {exc}", "weights") from None


def _complete_weights(
    folder: Path, staging: Path, safe_name: str, bin_name: str, present: list[str]
) -> None:
    """Both formats in `staging`: the given ones copied, the missing one written from tensors."""
    from adapters_core import loading

    tensors = _read_weights(folder / present[0])
    if len(present) == 2:
        other = _read_weights(folder / present[1])
        same = tensors.keys() == other.keys() and all(
            tensors[k].dtype == other[k].dtype and _equal(tensors[k], other[k]) for k in tensors
        )
        if not same:
            raise FolderError(f"{safe_name} and {bin_name} hold different tensors", "weights")
    for name in present:
        shutil.copyfile(folder / name, staging / name)
    if len(present) == 1:
        missing = bin_name if present[0] == safe_name else safe_name
        loading.write_state_dict(tensors, staging / missing)


def write_archive(root: Path, members: list[str], target: Path) -> None:
    """Zip `members` of `root` flat, in the given order, with fixed timestamps and modes."""
    with zipfile.ZipFile(target, "w") as zf:
        for member in members:
            source = root / member
            info = zipfile.ZipInfo(member, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.file_size = source.stat().st_size
            with source.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, storage.CHUNK_SIZE)


# -- rows ---------------------------------------------------------------------------------------


def record_version_files(
    version: AdapterVersion, members: Iterable[tuple[str, storage.StoredBlob]]
) -> None:
    """Make `members` (path, stored blob) the files the version hosts, replacing any before."""
    version.files.all().delete()
    VersionFile.objects.bulk_create(
        VersionFile(
            version=version,
            path=path,
            size=blob.size,
            sha256=blob.sha256,
            git_oid=blob.digests.git_oid,
            storage_key=blob.key,
        )
        for path, blob in members
    )


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    import torch

    return torch.equal(a, b)
