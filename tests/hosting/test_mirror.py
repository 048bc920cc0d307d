"""Mirroring external files: good ones hosted, wrong checksums and dead links recorded."""

import hashlib
import io
import zipfile

import pytest
from django.core.management import call_command

from hub_server import storage
from hub_server.catalog.mirror import mirror_files
from hub_server.catalog.mirror_tasks import mirror_files_task
from hub_server.catalog.models import Adapter, AdapterVersion, Architecture, Subtask
from tests.conftest import INTEROP
from tests.hosting.conftest import SUBTASK

Status = AdapterVersion.FileStatus


def legacy_archive() -> bytes:
    """A Hub archive as the original hub had them: members flat, only the .bin format."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted((INTEROP / "tiny-bert" / "seq_bn" / "a").iterdir()):
            zf.writestr(path.name, path.read_bytes())
    return buffer.getvalue()


@pytest.fixture
def external(catalogue, file_server):
    """An adapter whose card links three files: good, wrong checksum, missing."""
    root, base = file_server
    good = legacy_archive()
    (root / "good.zip").write_bytes(good)
    (root / "wrong.zip").write_bytes(b"not what the card says")
    subtask = Subtask.objects.get(subtask=SUBTASK)
    pfeiffer = Architecture.objects.get(name="pfeiffer")
    adapter = Adapter.objects.create(
        org="ukp", name="ext", type_id="text_task", task=subtask.task, subtask=subtask,
        model_type="bert", model_name="tiny-bert", architecture=pfeiffer,
        config=pfeiffer.config, config_hash=pfeiffer.config_hash, default_version="1",
    )  # fmt: skip
    rows = {
        "good": AdapterVersion.objects.create(
            adapter=adapter, version="1", url=f"{base}/good.zip",
            sha1=hashlib.sha1(good).hexdigest(), position=0,
        ),
        "wrong": AdapterVersion.objects.create(
            adapter=adapter, version="2", url=f"{base}/wrong.zip",
            sha256=hashlib.sha256(b"the real bytes").hexdigest(), position=1,
        ),
        "dead": AdapterVersion.objects.create(
            adapter=adapter, version="3", url=f"{base}/gone.zip", sha1="a" * 40, position=2,
        ),
    }  # fmt: skip
    return good, rows


def test_mirror(external, adapter_files, client):
    good, rows = external
    results = {r.version_id: r for r in mirror_files()}
    assert len(results) == 3

    hosted = AdapterVersion.objects.get(pk=rows["good"].pk)
    assert hosted.file_status == Status.HOSTED and hosted.size == len(good)
    assert (adapter_files / hosted.storage_key).read_bytes() == good
    files = {f.path: f for f in hosted.files.all()}
    assert "pytorch_adapter.bin" in files and "adapter.safetensors" in files  # both formats
    response = client.get("/api/v1/adapters/ukp/ext/versions/1/download")
    assert response.status_code == 200 and b"".join(response.streaming_content) == good
    assert response["ETag"] == f'"{hashlib.sha256(good).hexdigest()}"'

    wrong = AdapterVersion.objects.get(pk=rows["wrong"].pk)
    assert wrong.file_status == Status.CHECKSUM_MISMATCH and not wrong.storage_key
    assert "sha256 of the file" in wrong.file_error and "the card says" in wrong.file_error
    key = storage.content_key(hashlib.sha256(b"not what the card says").hexdigest())
    assert not storage.blob_exists(key)  # never stored as good
    assert results[wrong.pk].status == Status.CHECKSUM_MISMATCH
    assert client.get("/api/v1/adapters/ukp/ext/versions/2/download").status_code == 409

    dead = AdapterVersion.objects.get(pk=rows["dead"].pk)
    assert dead.file_status == Status.DEAD_LINK and "HTTP 404" in dead.file_error
    assert client.get("/api/v1/adapters/ukp/ext/versions/3/download").status_code == 410

    # A second run skips what is hosted and the mismatch; it retries the dead link.
    assert [r.version_id for r in mirror_files()] == [dead.pk]
    assert mirror_files_task(adapter="ukp/ext") == {Status.DEAD_LINK: 1}


def test_mirror_command(external):
    out = io.StringIO()
    call_command("mirror_files", "--adapter", "ukp/ext", "--limit", "1", stdout=out)
    assert "1 versions: 1 hosted" in out.getvalue()
    assert AdapterVersion.objects.get(version="2").file_status == Status.EXTERNAL
