"""A zip's member count and central directory size are read from its end record and checked before
the central directory is parsed: zipfile reads and parses the whole directory on opening (300k
members cost 3 s and 167 MB before the count was refused)."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile

import pytest

from adapters_core.archive import ExtractionLimits, read_end_record, safe_extract_zip
from adapters_core.errors import UnsafeArchiveError


def central_entry(index: int) -> bytes:
    name = f"member-{index:07d}.json".encode()
    fixed = struct.pack("<4s6H3L5HLL", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0)  # fmt: skip
    return fixed + name


def directory_only_zip(members: int, declared: int | None = None) -> bytes:
    """A zip of `members` central directory entries (no data), its end record declaring
    `declared` of them; zip64 when the count does not fit in 16 bits."""
    directory = b"".join(central_entry(i) for i in range(members))
    declared = members if declared is None else declared
    if declared < 0xFFFF:
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, declared, declared, len(directory), 0, 0)
        return directory + end
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, declared, declared, len(directory), 0
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(directory), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return directory + record + locator + end


def refuse(data: bytes, tmp_path, limits: ExtractionLimits) -> tuple[str, float, float]:
    """(message, seconds, peak MB) of refusing `data`; nothing is extracted."""
    archive = tmp_path / "upload.zip"
    archive.write_bytes(data)
    del data
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(UnsafeArchiveError) as exc:
            safe_extract_zip(archive, tmp_path / "out", limits)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert not (tmp_path / "out").exists()
    return str(exc.value), seconds, peak


def test_too_many_members_are_refused_from_the_end_record(tmp_path):
    message, seconds, peak = refuse(directory_only_zip(100_000), tmp_path, ExtractionLimits())
    assert message == "archive has 100000 members; at most 1000 are allowed"
    assert peak < 2 and seconds < 0.5, (peak, seconds)


def test_a_directory_larger_than_its_declared_members_is_refused(tmp_path):
    """The count says 3, the directory holds 60000 entries: zipfile would parse all of them."""
    data = directory_only_zip(60_000, declared=3)
    message, seconds, peak = refuse(data, tmp_path, ExtractionLimits())
    assert message.startswith("damaged zip archive: a central directory of")
    assert "for 3 members" in message
    assert peak < 2 and seconds < 0.5, (peak, seconds)


def test_a_directory_too_small_for_its_members_is_refused(tmp_path):
    data = directory_only_zip(2, declared=500)
    message, _, _ = refuse(data, tmp_path, ExtractionLimits())
    assert "a central directory of" in message and "for 500 members" in message


def test_end_record_of_real_archives(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.comment = b"x" * 1000
        for i in range(5):
            zf.writestr(f"f{i}.json", "{}")
    record = read_end_record(io.BytesIO(buffer.getvalue()))
    assert record.entries == 5 and record.directory_end > record.directory_offset
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.json", "{}")
        zf.writestr("b.json", "{}")
    data = buffer.getvalue()
    # zipfile writes the zip64 end records for large archives; a forced one reads the same
    eocd = data.rindex(b"PK\x05\x06")
    _, _, _, _, entries, size, offset, _ = struct.unpack_from("<4s4H2LH", data, eocd)
    record64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)  # fmt: skip
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    zip64 = data[:eocd] + record64 + locator + end
    assert read_end_record(io.BytesIO(zip64)).entries == 2
    archive = tmp_path / "zip64.zip"
    archive.write_bytes(zip64)
    target = safe_extract_zip(archive, tmp_path / "out", ExtractionLimits())
    assert sorted(p.name for p in target.iterdir()) == ["a.json", "b.json"]


def test_not_a_zip_is_refused(tmp_path):
    message, _, _ = refuse(b"\x1f\x8b\x08 a tarball" * 10, tmp_path, ExtractionLimits())
    assert "not a zip archive" in message
