"""Content-addressed storage: keys from hashes, immutability, streamed reads."""

import hashlib
import io

import pytest

from hub_server import storage


def test_store_bytes_under_its_sha256_key(adapter_files):
    data = b"adapter bytes" * 1000
    blob = storage.store_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    assert blob.key == f"sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    assert blob.digests.sha1 == hashlib.sha1(data).hexdigest()
    assert blob.size == len(data)
    assert blob.digests.git_oid == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert (adapter_files / blob.key).read_bytes() == data
    assert b"".join(storage.iter_blob(blob.key)) == data


def test_storing_again_is_a_no_op(adapter_files):
    first = storage.store_stream(io.BytesIO(b"same"))
    second = storage.store_stream(iter([b"sa", b"me"]))
    assert first == second
    assert [p.name for p in (adapter_files / first.key).parent.iterdir()] == [first.sha256]


def test_a_corrupted_stored_object_is_reported_and_never_overwritten(adapter_files):
    blob = storage.store_bytes(b"good")
    (adapter_files / blob.key).write_bytes(b"evil")
    with pytest.raises(storage.StorageIntegrityError):
        storage.store_bytes(b"good")
    assert (adapter_files / blob.key).read_bytes() == b"evil"


def test_ranges_and_size_cap(adapter_files):
    data = bytes(range(256)) * 5000
    blob = storage.store_bytes(data)
    assert b"".join(storage.iter_blob(blob.key, 10, 20, chunk_size=3)) == data[10:21]
    assert b"".join(storage.iter_blob(blob.key, len(data) - 5)) == data[-5:]
    with pytest.raises(storage.TooLargeError):
        storage.store_stream(io.BytesIO(data), max_size=1000)


def test_expected_hash_is_checked(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(storage.StorageIntegrityError):
        storage.store_path(path, expected_sha256="0" * 64)
