"""Mirroring: fetch the archives that cards link to, verify them, and host them here.

`mirror_version` downloads one version's `url` (streamed to a temp file, size-capped, with
timeouts), checks it against the card's sha256 (else sha1) and only then stores it
content-addressed and marks the version hosted. A wrong checksum or a dead link is recorded on the
version (`file_status` + `file_error`) and nothing is stored as good. A hosted archive's members
are recorded as VersionFiles (both weight formats, the missing one written from tensors read
through the safe path), so /hf/ serves mirrored adapters too.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from django.conf import settings
from django.db import transaction

from hub_server import storage
from hub_server.catalog.hosting import FolderError, prepare_folder, record_version_files
from hub_server.catalog.models import Adapter, AdapterVersion
from hub_server.catalog.signals import catalog_changed

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024**3
DEFAULT_TIMEOUT = (10, 60)  # connect, and between two reads
MAX_MEMBERS = 64
USER_AGENT = "AdapterHub-mirror/1.0"
Status = AdapterVersion.FileStatus


@dataclass
class MirrorResult:
    version_id: int
    label: str
    status: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.label}: {self.status}{' - ' + self.detail if self.detail else ''}"


class _Failed(Exception):
    def __init__(self, status: str, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def max_bytes() -> int:
    return int(getattr(settings, "HUB_MIRROR_MAX_BYTES", DEFAULT_MAX_BYTES))


def _label(version: AdapterVersion) -> str:
    return f"@{version.adapter.org}/{version.adapter.name}@{version.version}"


def mirror_version(version: AdapterVersion, timeout=DEFAULT_TIMEOUT) -> MirrorResult:
    """Mirror one version; record and return the outcome. Safe to run twice."""
    label = _label(version)
    if version.file_status == Status.HOSTED and storage.blob_exists(version.storage_key):
        return MirrorResult(version.pk, label, "already hosted")
    try:
        if not (version.sha256 or version.sha1):
            raise _Failed(Status.EXTERNAL, "the card gives no sha256 or sha1: not mirrored")
        with storage.temporary_file() as tmp:
            digests = _download(version.url, tmp, timeout)
            expected, actual, algo = (
                (version.sha256, digests.sha256, "sha256")
                if version.sha256
                else (version.sha1, digests.sha1, "sha1")
            )
            if actual != expected:
                raise _Failed(
                    Status.CHECKSUM_MISMATCH,
                    f"{algo} of the file at {version.url} is {actual}, the card says {expected}",
                )
            tmp.flush()
            blob = storage.store_path(tmp.name)
            members, note = _store_members(Path(tmp.name))
    except _Failed as failure:
        _record(version, failure.status, failure.detail)
        return MirrorResult(version.pk, label, failure.status, failure.detail)
    _record_hosted(version, blob, members, note)
    return MirrorResult(version.pk, label, Status.HOSTED, f"{blob.size} bytes{note}")


def _download(url: str, target, timeout) -> storage.Digests:
    if not url.startswith(("http://", "https://")):
        raise _Failed(Status.DEAD_LINK, f"not an http(s) URL: {url!r}")
    cap = max_bytes()
    try:
        with requests.get(
            url, stream=True, timeout=timeout, headers={"User-Agent": USER_AGENT}
        ) as response:
            if response.status_code >= 400:
                raise _Failed(Status.DEAD_LINK, f"HTTP {response.status_code} from {url}")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cap:
                raise _Failed(Status.EXTERNAL, f"{length} bytes: over the mirror cap of {cap}")
            return storage.copy_stream(response.iter_content(storage.CHUNK_SIZE), target, cap)
    except storage.TooLargeError:
        raise _Failed(Status.EXTERNAL, f"over the mirror cap of {cap} bytes") from None
    except requests.RequestException as exc:
        raise _Failed(Status.DEAD_LINK, f"{type(exc).__name__} fetching {url}: {exc}") from None


def _record(version: AdapterVersion, status: str, detail: str) -> None:
    AdapterVersion.objects.filter(pk=version.pk).exclude(file_status=Status.HOSTED).update(
        file_status=status, file_error=detail[:2000]
    )
    version.file_status, version.file_error = status, detail


def _record_hosted(version, blob: storage.StoredBlob, members, note: str) -> None:
    with transaction.atomic():
        row = AdapterVersion.objects.select_for_update().get(pk=version.pk)
        row.storage_key = blob.key
        row.size = blob.size
        row.file_status = Status.HOSTED
        row.file_error = note.strip(" ;")
        row.save(update_fields=["storage_key", "size", "file_status", "file_error"])
        record_version_files(row, members)
    version.refresh_from_db()


def _store_members(archive: Path) -> tuple[list[tuple[str, storage.StoredBlob]], str]:
    """The archive's members, stored (with both weight formats); ([], note) when not indexable."""
    try:
        with tempfile.TemporaryDirectory(prefix="hub-mirror-") as tmp:
            folder = Path(tmp) / "extracted"
            _extract_flat(archive, folder)
            prepared = prepare_folder(folder, Path(tmp) / "members")
            members = [(m, storage.store_path(prepared.root / m)) for m in prepared.members]
            return members, ""
    except (FolderError, zipfile.BadZipFile, _UnsafeArchive) as exc:
        return [], f"; members not served on /hf/: {exc}"


class _UnsafeArchive(Exception):
    pass


def _extract_flat(archive: Path, target: Path) -> None:
    """Extract a Hub archive (members flat, or all in one top folder) without trusting names."""
    target.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise _UnsafeArchive(f"{len(infos)} members (at most {MAX_MEMBERS})")
        total = sum(i.file_size for i in infos)
        if total > 4 * max_bytes():
            raise _UnsafeArchive(f"{total} bytes uncompressed")
        paths = [PurePosixPath(i.filename) for i in infos]
        for path in paths:
            if path.is_absolute() or ".." in path.parts or "\\" in str(path):
                raise _UnsafeArchive(f"unsafe member name {str(path)!r}")
        tops = {p.parts[0] for p in paths if len(p.parts) > 1}
        strip = len(tops) == 1 and all(len(p.parts) == 2 for p in paths)
        for info, path in zip(infos, paths, strict=True):
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise _UnsafeArchive(f"{info.filename} is a symbolic link")
            name = path.parts[-1] if strip else str(path)
            if "/" in name:
                raise _UnsafeArchive(f"member {info.filename!r} is not at the top of the archive")
            with zf.open(info) as src, (target / name).open("wb") as dst:
                storage.copy_stream(src, dst, info.file_size)


def candidates(adapter: str | None = None, recheck: bool = False):
    statuses = [Status.EXTERNAL, Status.DEAD_LINK]
    if recheck:
        statuses.append(Status.CHECKSUM_MISMATCH)
    versions = (
        AdapterVersion.objects.filter(file_status__in=statuses)
        .exclude(adapter__status=Adapter.Status.WITHDRAWN)
        .select_related("adapter")
        .order_by("id")
    )
    if adapter:
        org, _, name = adapter.lstrip("@").partition("/")
        versions = versions.filter(adapter__org=org, adapter__name=name)
    return versions


def mirror_files(
    adapter: str | None = None, limit: int | None = None, recheck: bool = False, progress=None
) -> list[MirrorResult]:
    """Mirror every external version (of one adapter `org/name`, at most `limit`)."""
    versions = candidates(adapter, recheck)
    if limit:
        versions = versions[:limit]
    results = []
    for version in versions:
        result = mirror_version(version)
        log.info("mirror %s", result)
        if progress:
            progress(str(result))
        results.append(result)
    if results:
        catalog_changed.send(sender=AdapterVersion, mirrored=[r.version_id for r in results])
    return results
