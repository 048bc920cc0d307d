"""Each check of the pipeline, through the service (eager validation): a good adapter from either
library is published; each bad upload is rejected with its own message."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest

from hub_server.uploads import services
from hub_server.uploads.models import Upload

from .conftest import save_tiny_adapter, zip_folder

pytestmark = pytest.mark.django_db


def upload(user, data: bytes, django_capture_on_commit_callbacks, **kwargs) -> Upload:
    fields = {"task": "sentiment", "subtask": "demo-reviews", "org": "alice-lab", **kwargs}
    with django_capture_on_commit_callbacks(execute=True):
        created = services.create_upload(user=user, archive=io.BytesIO(data), **fields)
    created.refresh_from_db()
    return created


def failed(up: Upload) -> dict:
    assert up.status == "rejected", up.report
    return next(e for e in up.report if e["ok"] is False)


def test_our_adapter_is_published_with_a_full_report(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    up = upload(alice, zip_folder(tiny_adapter), django_capture_on_commit_callbacks)
    assert up.status == "published", up.report
    assert [e["name"] for e in up.report] == [
        "archive", "peft", "card", "config", "weights", "load", "run", "publish"
    ]  # fmt: skip
    assert all(e["ok"] for e in up.report) and all(e["duration_ms"] >= 0 for e in up.report)
    adapter = up.adapter_version.adapter
    assert adapter.unique_id == "@alice-lab/tiny-bert_sentiment_demo-reviews_pfeiffer"
    assert adapter.identifier == "sentiment/demo-reviews@alice-lab"
    assert up.adapter_version.file_status == "hosted"


def test_reference_library_folder_is_published(
    alice, reference_adapter, django_capture_on_commit_callbacks
):
    up = upload(alice, zip_folder(reference_adapter), django_capture_on_commit_callbacks)
    assert up.status == "published", up.report
    names = set(up.adapter_version.files.values_list("path", flat=True))
    assert {"adapter.safetensors", "pytorch_adapter.bin", "head_config.json"} <= names


def test_a_new_version_is_an_upload_too(alice, tmp_path, django_capture_on_commit_callbacks):
    first = save_tiny_adapter(tmp_path / "v1", seed=1)
    second = save_tiny_adapter(tmp_path / "v2", seed=2)
    up1 = upload(alice, zip_folder(first), django_capture_on_commit_callbacks)
    up2 = upload(alice, zip_folder(second), django_capture_on_commit_callbacks)
    assert (up1.status, up2.status) == ("published", "published"), up2.report
    assert up1.adapter_version.adapter_id == up2.adapter_version.adapter_id
    assert (up1.version, up2.version) == ("1", "2")
    assert up2.adapter_version.adapter.default_version == "2"


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _members(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_zip_slip_is_rejected(alice, tiny_adapter, django_capture_on_commit_callbacks):
    data = _zip({**_members(tiny_adapter), "../../evil.json": b"{}"})
    entry = failed(upload(alice, data, django_capture_on_commit_callbacks))
    assert entry["name"] == "archive" and "escapes the target folder" in entry["message"]


def test_zip_bomb_is_rejected(alice, tiny_adapter, django_capture_on_commit_callbacks):
    data = _zip({**_members(tiny_adapter), "pytorch_adapter.bin": bytes(30 * 1024 * 1024)})
    entry = failed(upload(alice, data, django_capture_on_commit_callbacks))
    assert entry["name"] == "archive" and "compression ratio" in entry["message"]


def test_symlink_is_rejected(alice, tiny_adapter, django_capture_on_commit_callbacks):
    data = _zip(_members(tiny_adapter), symlink="adapter_setup.json")
    entry = failed(upload(alice, data, django_capture_on_commit_callbacks))
    assert entry["name"] == "archive" and "symbolic link" in entry["message"]


def test_not_a_zip_and_unknown_files_are_rejected(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    entry = failed(upload(alice, b"\x1f\x8b\x08 tarball", django_capture_on_commit_callbacks))
    assert "must be a zip archive" in entry["message"]
    data = _zip({**_members(tiny_adapter), "run_me.py": b"print(1)"})
    entry = failed(upload(alice, data, django_capture_on_commit_callbacks))
    assert "unknown file(s) in the archive: ['run_me.py']" in entry["message"]


class _CreatesFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_that_would_run_code_is_never_executed(
    alice, tiny_adapter, tmp_path, django_capture_on_commit_callbacks
):
    marker = tmp_path / "pwned"
    members = _members(tiny_adapter)
    del members["adapter.safetensors"]
    members["pytorch_adapter.bin"] = pickle.dumps({"x": _CreatesFile(str(marker))}, protocol=2)
    entry = failed(upload(alice, _zip(members), django_capture_on_commit_callbacks))
    assert entry["name"] == "weights" and "unpickling it would run code" in entry["message"]
    assert not marker.exists()


def test_truncated_safetensors_is_rejected(alice, tiny_adapter, django_capture_on_commit_callbacks):
    members = _members(tiny_adapter)
    members["adapter.safetensors"] = members["adapter.safetensors"][:-100]
    entry = failed(upload(alice, _zip(members), django_capture_on_commit_callbacks))
    assert entry["name"] == "weights" and "corrupt or truncated" in entry["message"]


def test_weights_for_another_model_size_are_rejected(
    alice, tmp_path, django_capture_on_commit_callbacks
):
    folder = save_tiny_adapter(tmp_path / "h32", hidden_size=32, head=False)
    entry = failed(upload(alice, zip_folder(folder), django_capture_on_commit_callbacks))
    assert entry["name"] == "config"
    assert "hidden_size 32, but base model tiny-bert has hidden size 64" in entry["message"]
    # with the config edited to claim the right size, the shapes give it away at load
    config = json.loads((folder / "adapter_config.json").read_text())
    config["hidden_size"] = 64
    (folder / "adapter_config.json").write_text(json.dumps(config))
    entry = failed(upload(alice, zip_folder(folder), django_capture_on_commit_callbacks))
    assert entry["name"] == "load" and "shape mismatches" in entry["message"]


def test_unknown_task_is_rejected(alice, tiny_adapter, django_capture_on_commit_callbacks):
    up = upload(alice, zip_folder(tiny_adapter), django_capture_on_commit_callbacks, task="nope")
    entry = failed(up)
    assert entry["name"] == "card"
    assert "unknown task 'nope' for type 'text_task'" in entry["message"]
    assert [e["ok"] for e in up.report] == [True, True, False, None, None, None, None]


def test_unavailable_base_model_is_rejected(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    config = json.loads((tiny_adapter / "adapter_config.json").read_text())
    config["model_name"] = "nobody/unknown-bert"
    (tiny_adapter / "adapter_config.json").write_text(json.dumps(config))
    entry = failed(upload(alice, zip_folder(tiny_adapter), django_capture_on_commit_callbacks))
    assert entry["name"] == "config"
    assert entry["message"].startswith(
        "base model nobody/unknown-bert is not available to this hub's validators"
    )


def test_model_type_must_match_the_base_model(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    config = json.loads((tiny_adapter / "adapter_config.json").read_text())
    config["model_type"] = "roberta"
    (tiny_adapter / "adapter_config.json").write_text(json.dumps(config))
    entry = failed(upload(alice, zip_folder(tiny_adapter), django_capture_on_commit_callbacks))
    assert (
        "says model_type 'roberta', but base model tiny-bert is a 'bert' model" in entry["message"]
    )


def test_validation_twice_is_a_no_op(alice, tiny_adapter, django_capture_on_commit_callbacks):
    up = upload(alice, zip_folder(tiny_adapter), django_capture_on_commit_callbacks)
    again = services.validate_upload(up.pk)
    assert again.status == "published" and again.attempts == 1
    assert again.report == up.report
