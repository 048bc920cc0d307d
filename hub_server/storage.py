"""Content-addressed storage of adapter archives and their member files.

Every blob lives under `sha256/<ab>/<cd>/<sha256>` of the `adapter_files` storage (local files, or
S3 when HUB_STORAGE=s3; see docs/storage.md). A key names its bytes forever: writing a key that
exists only checks that the stored bytes hash to it, and never overwrites them. Hashes are
computed while streaming, and reads are streamed in chunks, so no blob is ever held in memory.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages

CHUNK_SIZE = 1024 * 1024
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class StorageIntegrityError(Exception):
    """Stored bytes do not hash to their key, or a stream does not match its expected digest."""


class TooLargeError(Exception):
    """A stream went past the size cap it was read under."""


class StorageWriteError(Exception):
    """The storage (or the local temp dir) cannot take the bytes: full, read-only, no permission.

    Nothing was stored: a local blob is written under a temporary name and renamed into place
    only once complete, and the temporary file is removed on failure.
    """

    def __init__(self, message: str, full: bool):
        super().__init__(message)
        self.full = full

    @classmethod
    def from_os_error(cls, exc: OSError) -> StorageWriteError:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        if full:
            what = "the file storage is full"
        elif exc.errno == errno.EROFS:
            what = "the file storage is read-only"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            what = "the file storage refuses writes (permission denied)"
        else:
            what = "the file storage failed to write"
        return cls(f"{what}: {exc.strerror or exc}", full)


@dataclass(frozen=True)
class Digests:
    sha256: str
    sha1: str
    size: int
    # The git blob id (sha1 of "blob <size>\\0" + bytes), the `oid` Hugging Face clients expect.
    git_oid: str = ""


@dataclass(frozen=True)
class StoredBlob:
    key: str
    digests: Digests

    @property
    def sha256(self) -> str:
        return self.digests.sha256

    @property
    def size(self) -> int:
        return self.digests.size


def adapter_storage() -> Storage:
    return storages["adapter_files"]


def content_key(sha256: str) -> str:
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def hash_file(path: str | os.PathLike) -> Digests:
    """sha256, sha1, size and git blob id of a local file, in one streaming pass."""
    size = os.stat(path).st_size
    sha256, sha1, git = hashlib.sha256(), hashlib.sha1(), hashlib.sha1(b"blob %d\0" % size)
    read = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            read += len(chunk)
            sha256.update(chunk)
            sha1.update(chunk)
            git.update(chunk)
    if read != size:
        raise StorageIntegrityError(f"{path} changed size while it was hashed")
    return Digests(sha256.hexdigest(), sha1.hexdigest(), size, git.hexdigest())


def copy_stream(
    stream: BinaryIO | Iterator[bytes], target: BinaryIO, max_size: int | None = None
) -> Digests:
    """Copy a file object or an iterator of chunks into `target`, hashing on the way.

    Raises TooLargeError as soon as more than `max_size` bytes arrive.
    """
    sha256, sha1, size = hashlib.sha256(), hashlib.sha1(), 0
    chunks = iter(lambda: stream.read(CHUNK_SIZE), b"") if hasattr(stream, "read") else stream
    for chunk in chunks:
        if not chunk:
            continue
        size += len(chunk)
        if max_size is not None and size > max_size:
            raise TooLargeError(f"more than {max_size} bytes")
        sha256.update(chunk)
        sha1.update(chunk)
        target.write(chunk)
    return Digests(sha256.hexdigest(), sha1.hexdigest(), size)


def temporary_file():
    """A named temp file on local disk (FILE_UPLOAD_TEMP_DIR when set), removed when closed."""
    return tempfile.NamedTemporaryFile(
        prefix="hub-blob-", dir=getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    )


def store_path(path: str | os.PathLike, expected_sha256: str | None = None) -> StoredBlob:
    """Store a local file under its content key; a no-op (after verification) when it is there."""
    digests = hash_file(path)
    if expected_sha256 and digests.sha256 != expected_sha256:
        raise StorageIntegrityError(
            f"{path}: sha256 is {digests.sha256}, expected {expected_sha256}"
        )
    key = content_key(digests.sha256)
    try:
        _put(key, Path(path), digests)
    except OSError as exc:
        raise StorageWriteError.from_os_error(exc) from exc
    return StoredBlob(key, digests)


@contextmanager
def spooled(stream: BinaryIO | Iterator[bytes], max_size: int | None = None) -> Iterator[Path]:
    """The stream in a local temp file (removed after the block), read under `max_size`."""
    try:
        with temporary_file() as tmp:
            copy_stream(stream, tmp, max_size)
            tmp.flush()
            yield Path(tmp.name)
    except OSError as exc:
        raise StorageWriteError.from_os_error(exc) from exc


def store_stream(stream: BinaryIO | Iterator[bytes], max_size: int | None = None) -> StoredBlob:
    """Store a stream: spooled to a local temp file (hashed on the way), then stored by content."""
    with spooled(stream, max_size) as path:
        return store_path(path)


def store_bytes(data: bytes) -> StoredBlob:
    return store_stream(iter([data]))


def _put(key: str, source: Path, digests: Digests) -> None:
    storage = adapter_storage()
    if storage.exists(key):
        verify_blob(key, digests.sha256)
        return
    target = local_path(key)
    if target is not None:
        if not _put_local(source, target):
            verify_blob(key, digests.sha256)
        return
    with source.open("rb") as fh:
        saved = storage.save(key, File(fh, name=key))
    if saved != key:
        # Another writer stored the same key between our check and our save: the storage put our
        # copy under another name. Keep theirs, if it is right, and drop ours.
        storage.delete(saved)
        verify_blob(key, digests.sha256)


def _put_local(source: Path, target: Path) -> bool:
    """Copy `source` to `target` whole or not at all: written under a temporary name beside it,
    synced, then linked into place (never over an existing file). False when another writer put
    the key there first. A failure (disk full, read-only) leaves no file behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, CHUNK_SIZE)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(partial, getattr(settings, "FILE_UPLOAD_PERMISSIONS", None) or 0o644)
        try:
            os.link(partial, target)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # A filesystem without hard links: a rename is atomic too (it would replace a file
            # that appeared meanwhile, which holds the same bytes by its name).
            os.replace(partial, target)
        return True
    finally:
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass


def delete_blob(key: str) -> None:
    adapter_storage().delete(key)


def verify_blob(key: str, sha256: str) -> None:
    actual = hash_blob(key).sha256
    if actual != sha256:
        raise StorageIntegrityError(
            f"stored object {key} hashes to {actual}, not {sha256}; it was left untouched"
        )


def hash_blob(key: str) -> Digests:
    sha256, sha1, size = hashlib.sha256(), hashlib.sha1(), 0
    for chunk in iter_blob(key):
        size += len(chunk)
        sha256.update(chunk)
        sha1.update(chunk)
    return Digests(sha256.hexdigest(), sha1.hexdigest(), size)


def blob_exists(key: str) -> bool:
    return bool(key) and adapter_storage().exists(key)


def blob_size(key: str) -> int:
    return adapter_storage().size(key)


def local_path(key: str) -> Path | None:
    """The file's path when the storage is local (None for object storage)."""
    try:
        return Path(adapter_storage().path(key))
    except NotImplementedError:
        return None


def open_blob(key: str) -> BinaryIO:
    """Open a blob for reading. For object storage prefer `iter_blob`, which streams ranges."""
    path = local_path(key)
    if path is not None:
        return path.open("rb")
    return adapter_storage().open(key, "rb")


def iter_blob(
    key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield the bytes `start..end` (inclusive; `end=None` means to the last byte) in chunks."""
    storage = adapter_storage()
    bucket = getattr(storage, "bucket", None)
    if local_path(key) is None and bucket is not None:
        # S3: a ranged GET streamed from the response body; S3File would spool the whole object.
        byte_range = f"bytes={start}-{'' if end is None else end}"
        body = bucket.Object(storage._normalize_name(key)).get(Range=byte_range)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()
        return
    with open_blob(key) as fh:
        if start:
            fh.seek(start)
        remaining = None if end is None else end - start + 1
        while remaining is None or remaining > 0:
            chunk = fh.read(chunk_size if remaining is None else min(chunk_size, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


def presigned_url(
    key: str, *, content_type: str | None = None, disposition: str | None = None
) -> str | None:
    """A URL the client downloads the blob from directly, valid HUB_S3_URL_EXPIRY_SECONDS: on S3
    with HUB_S3_DOWNLOAD_REDIRECT on; None otherwise (the hub serves the bytes itself). Signed for
    HUB_S3_PUBLIC_ENDPOINT_URL when the storage's own endpoint is not reachable by clients."""
    if settings.HUB_STORAGE != "s3" or not settings.HUB_S3_DOWNLOAD_REDIRECT:
        return None
    storage = adapter_storage()
    if getattr(storage, "bucket_name", None) is None:
        return None
    client = _presigning_client(
        settings.HUB_S3_PUBLIC_ENDPOINT_URL or storage.endpoint_url or None,
        storage.access_key or None,
        storage.secret_key or None,
        storage.region_name or None,
    )
    params = {"Bucket": storage.bucket_name, "Key": storage._normalize_name(key)}
    if content_type:
        params["ResponseContentType"] = content_type
    if disposition:
        params["ResponseContentDisposition"] = disposition
    return client.generate_presigned_url(
        "get_object", Params=params, ExpiresIn=settings.HUB_S3_URL_EXPIRY_SECONDS
    )


@functools.lru_cache(maxsize=4)
def _presigning_client(
    endpoint: str | None, access: str | None, secret: str | None, region: str | None
):
    import boto3
    from botocore.config import Config

    # Path-style URLs on a custom endpoint (MinIO, moto, Ceph): no wildcard DNS needed.
    style = {"addressing_style": "path"} if endpoint else {}
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(signature_version="s3v4", s3=style),
    )


def copy_blob_to(key: str, target: BinaryIO) -> None:
    for chunk in iter_blob(key):
        target.write(chunk)


def fetch_to_path(key: str, path: str | os.PathLike) -> Path:
    """Copy a blob to a local file (for tools that need a path, e.g. reading a zip)."""
    local = local_path(key)
    if local is not None:
        shutil.copyfile(local, path)
    else:
        with open(path, "wb") as fh:
            copy_blob_to(key, fh)
    return Path(path)
