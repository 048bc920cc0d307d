"""Unpacking a downloaded adapter archive without trusting its member names (standard library only:
the CLI does not depend on adapters_core)."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_BYTES = 8 * 1024**3


class ArchiveError(Exception):
    pass


def _relative_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if not path.parts or path.is_absolute() or ":" in path.parts[0]:
        raise ArchiveError(f"archive member {info.filename!r} has an absolute path")
    if ".." in path.parts:
        raise ArchiveError(f"archive member {info.filename!r} leaves the target folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"archive member {info.filename!r} is a link")
    return tuple(p for p in path.parts if p not in ("", "."))


def unpack(archive: Path, target: Path, max_bytes: int = MAX_BYTES) -> None:
    """Extract into `target` (must not exist); one common top-level folder is dropped."""
    with zipfile.ZipFile(archive) as zf:
        members = [(i, _relative_parts(i)) for i in zf.infolist() if not i.is_dir()]
        if sum(i.file_size for i, _ in members) > max_bytes:
            raise ArchiveError(f"archive expands to more than {max_bytes} bytes")
        tops = {parts[0] for _, parts in members}
        if len(tops) == 1 and all(len(parts) > 1 for _, parts in members):
            members = [(i, parts[1:]) for i, parts in members]
        target.mkdir(parents=True)
        written = 0
        for info, parts in members:
            destination = target.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with os.fdopen(os.open(destination, flags, 0o644), "wb") as out, zf.open(info) as src:
                while chunk := src.read(1024 * 1024):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ArchiveError("archive expands beyond its declared size")
                    out.write(chunk)
