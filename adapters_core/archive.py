"""Extracting an untrusted zip archive: every check runs on the archive's directory before a byte
is written (path traversal, links, special files, encryption, duplicates, member count, sizes,
compression ratios), and the member count and central directory size are read from the end
record before the central directory itself is parsed (zipfile parses all of it on opening).
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from adapters_core.errors import UnsafeArchiveError

__all__ = ["ExtractionLimits", "safe_extract_zip"]

_CHUNK = 1024 * 1024


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class ExtractionLimits:
    """Caps checked on an archive's directory before anything is extracted."""

    max_files: int = 1000
    max_total_bytes: int = 4 * 1024**3
    max_ratio: float = 200.0
    # Members smaller than this may compress better than max_ratio (JSON, zero tensors).
    ratio_min_bytes: int = 1024 * 1024
    max_download_bytes: int = 4 * 1024**3

    @classmethod
    def from_env(cls) -> ExtractionLimits:
        """Defaults overridden by ADAPTERS_CORE_MAX_ARCHIVE_FILES / _BYTES / _RATIO."""
        return cls(
            max_files=_env_int("ADAPTERS_CORE_MAX_ARCHIVE_FILES", cls.max_files),
            max_total_bytes=_env_int("ADAPTERS_CORE_MAX_ARCHIVE_BYTES", cls.max_total_bytes),
            max_ratio=float(os.environ.get("ADAPTERS_CORE_MAX_ARCHIVE_RATIO") or cls.max_ratio),
            max_download_bytes=_env_int("ADAPTERS_CORE_MAX_DOWNLOAD_BYTES", cls.max_download_bytes),
        )


# The end of a zip: the end-of-central-directory record (22 bytes and a comment of up to 64 KiB),
# with the zip64 locator (20 bytes) before it when counts or offsets overflow.
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_HEADER_BYTES = 46
# A central directory entry: its fixed header and a name, extra field and comment within 4 KiB
# (save_adapter writes names of under 40 bytes); more is not an adapter archive.
_MAX_CENTRAL_ENTRY_BYTES = _CENTRAL_HEADER_BYTES + 4096


@dataclass(frozen=True)
class EndRecord:
    """What a zip's end record declares: member count, central directory size and offset, and
    where the directory must end (the end record, or the zip64 record)."""

    entries: int
    directory_size: int
    directory_offset: int
    directory_end: int


def read_end_record(fh: BinaryIO) -> EndRecord:
    """The end record of the zip open as `fh`, without reading its central directory."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_start = max(0, size - _EOCD.size - 0xFFFF)
    fh.seek(tail_start)
    tail = fh.read()
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or at + _EOCD.size > len(tail):
        raise UnsafeArchiveError("not a zip archive (no end of central directory record)")
    _, _, _, _, entries, dir_size, dir_offset, _ = _EOCD.unpack_from(tail, at)
    end = tail_start + at
    if entries == 0xFFFF or dir_size == 0xFFFFFFFF or dir_offset == 0xFFFFFFFF:
        if end < _ZIP64_LOCATOR.size:
            raise UnsafeArchiveError("damaged zip archive: no zip64 end record locator")
        fh.seek(end - _ZIP64_LOCATOR.size)
        signature, _, record_at, _ = _ZIP64_LOCATOR.unpack(fh.read(_ZIP64_LOCATOR.size))
        if signature == b"PK\x06\x07":
            fh.seek(record_at)
            record = fh.read(_ZIP64_EOCD.size)
            if len(record) < _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
                raise UnsafeArchiveError("damaged zip archive: bad zip64 end record")
            *_, entries, dir_size, dir_offset = _ZIP64_EOCD.unpack(record)
            end = record_at
    return EndRecord(entries, dir_size, dir_offset, end)


def check_end_record(fh: BinaryIO, limits: ExtractionLimits) -> EndRecord:
    """Refuse an archive whose end record declares too many members, or a central directory that
    cannot be theirs, before zipfile parses the whole directory into memory."""
    record = read_end_record(fh)
    if record.entries > limits.max_files:
        raise UnsafeArchiveError(
            f"archive has {record.entries} members; at most {limits.max_files} are allowed"
        )
    low = record.entries * _CENTRAL_HEADER_BYTES
    high = max(record.entries, 1) * _MAX_CENTRAL_ENTRY_BYTES
    if not low <= record.directory_size <= high:
        raise UnsafeArchiveError(
            f"damaged zip archive: a central directory of {record.directory_size} bytes for "
            f"{record.entries} members (expected {low} to {high})"
        )
    if record.directory_offset + record.directory_size > record.directory_end:
        raise UnsafeArchiveError(
            "damaged zip archive: the central directory runs past the end record"
        )
    return record


_IGNORED_MEMBERS = ("__MACOSX/",)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    name = info.filename
    if "\x00" in name:
        raise UnsafeArchiveError(f"archive member {name!r} has a NUL byte in its name")
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    parts = tuple(part for part in re.split(r"[/\\]", name) if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} escapes the target folder ('..')")
    if not parts:
        raise UnsafeArchiveError(f"archive member {name!r} has an empty path")
    return parts


def _member_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    file_type = stat.S_IFMT(mode)
    if file_type == stat.S_IFLNK:
        raise UnsafeArchiveError(f"archive member {info.filename!r} is a symbolic link")
    if info.is_dir() or file_type == stat.S_IFDIR:
        return "dir"
    if file_type not in (0, stat.S_IFREG):
        raise UnsafeArchiveError(f"archive member {info.filename!r} is not a regular file")
    return "file"


def _plan_extraction(
    archive: zipfile.ZipFile, limits: ExtractionLimits
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Check every member and return (member, relative path parts) of the files to write."""
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise UnsafeArchiveError(
            f"archive has {len(infos)} members; at most {limits.max_files} are allowed"
        )
    files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    total = 0
    total_compressed = 0
    seen: set[tuple[str, ...]] = set()
    for info in infos:
        parts = _member_parts(info)
        kind = _member_kind(info)
        if info.filename.startswith(_IGNORED_MEMBERS) or parts[-1] == ".DS_Store":
            continue
        if kind == "dir":
            continue
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"archive member {info.filename!r} is encrypted")
        key = tuple(part.lower() for part in parts)
        if key in seen:
            raise UnsafeArchiveError(f"archive has member {info.filename!r} twice")
        seen.add(key)
        total += info.file_size
        total_compressed += info.compress_size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"archive expands to more than {limits.max_total_bytes} bytes; refusing"
            )
        if info.file_size >= limits.ratio_min_bytes and (
            info.file_size > limits.max_ratio * max(info.compress_size, 1)
        ):
            raise UnsafeArchiveError(
                f"archive member {info.filename!r} has compression ratio "
                f"{info.file_size / max(info.compress_size, 1):.0f}:1 "
                f"(over {limits.max_ratio:.0f}:1; a zip bomb?)"
            )
        files.append((info, parts))
    if total >= limits.ratio_min_bytes and total > limits.max_ratio * max(total_compressed, 1):
        raise UnsafeArchiveError(
            f"archive has compression ratio {total / max(total_compressed, 1):.0f}:1 "
            f"(over {limits.max_ratio:.0f}:1; a zip bomb?)"
        )
    if not files:
        raise UnsafeArchiveError("archive contains no files")
    # Members may sit inside one top-level folder: strip it so the adapter files are at the top.
    tops = {parts[0] for _, parts in files}
    if len(tops) == 1 and all(len(parts) > 1 for _, parts in files):
        files = [(info, parts[1:]) for info, parts in files]
    return files


def safe_extract_zip(
    archive_path: str | os.PathLike,
    target_dir: str | os.PathLike,
    limits: ExtractionLimits | None = None,
) -> Path:
    """Extract a zip archive into ``target_dir`` (which must not exist yet) after checking it.

    Refuses absolute paths, ``..``, links, non-regular files, encrypted or duplicate members,
    too many members (counted in the end record, before the directory is parsed), a central
    directory larger than its members need, too many bytes and suspicious compression ratios. Members inside one
    top-level folder are extracted without it. Nothing is written if a check fails.
    """
    limits = limits or ExtractionLimits.from_env()
    target = Path(target_dir)
    with open(archive_path, "rb") as fh:
        check_end_record(fh, limits)
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchiveError(f"{archive_path} is not a zip archive: {exc}") from None
    with archive:
        plan = _plan_extraction(archive, limits)
        target.mkdir(parents=True, exist_ok=False)
        written = 0
        for info, parts in plan:
            destination = target.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(destination, flags, 0o644)
            with os.fdopen(fd, "wb") as out, archive.open(info) as source:
                while chunk := source.read(_CHUNK):
                    written += len(chunk)
                    if written > limits.max_total_bytes:
                        raise UnsafeArchiveError("archive expands beyond its declared size")
                    out.write(chunk)
    return target
