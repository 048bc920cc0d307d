"""publish_adapter_folder: both weight formats, deterministic archives, immutable versions, the
card the upload workflow commits, and the publish_adapter command."""

import io
import json
import zipfile

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hub_server import storage
from hub_server.catalog import hubformat
from hub_server.catalog.demo import DEMO_SOURCE
from hub_server.catalog.models import Adapter, AdapterVersion, VersionFile
from hub_server.catalog.signals import catalog_changed
from hub_server.catalog.sync import sync_hub_repository
from hub_server.uploads.publishing import (
    PublishError,
    publish_adapter_folder,
    render_card_yaml,
    write_archive,
)
from tests.conftest import commit_all, make_git_repo
from tests.hosting.conftest import ORG, SUBTASK, TASK

BOTH_FORMATS = [
    "adapter.safetensors",
    "adapter_config.json",
    "head_config.json",
    "model_head.safetensors",
    "pytorch_adapter.bin",
    "pytorch_model_head.bin",
]


def publish(folder, **kwargs):
    kwargs.setdefault("task", TASK)
    kwargs.setdefault("subtask", SUBTASK)
    kwargs.setdefault("org", ORG)
    return publish_adapter_folder(folder, **kwargs)


def edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text())
    data["config"].update(changes)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def test_publish_hosts_both_weight_formats(
    catalogue, saved_adapter, adapter_files, tmp_path, django_capture_on_commit_callbacks
):
    from adapters_core.loading import read_state_dict

    received = []
    catalog_changed.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t1")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            version = publish(saved_adapter, card_extra={"description": "A tiny test adapter."})
    finally:
        catalog_changed.disconnect(dispatch_uid="t1")
    adapter = version.adapter
    assert adapter.name == "tiny-bert_sentiment_sst-2_pfeiffer"
    assert adapter.architecture.name == "pfeiffer"
    assert adapter.config_hash == "9076f36a74755ac4"
    assert adapter.has_head and adapter.model_type == "bert" and adapter.model_name == "tiny-bert"
    assert adapter.default_version == version.version == "1"
    assert version.file_status == AdapterVersion.FileStatus.HOSTED
    assert (
        version.url
        == "/api/v1/adapters/alice/tiny-bert_sentiment_sst-2_pfeiffer/versions/1/download"
    )
    assert received and received[0]["version"] == version

    archive = (adapter_files / version.storage_key).read_bytes()
    assert len(archive) == version.size
    assert storage.content_key(version.sha256) == version.storage_key
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.namelist() == BOTH_FORMATS
        members = {name: zf.read(name) for name in zf.namelist()}
    files = {f.path: f for f in version.files.all()}
    assert sorted(files) == BOTH_FORMATS
    for name, data in members.items():
        assert (adapter_files / files[name].storage_key).read_bytes() == data
        assert files[name].size == len(data)
    for original in saved_adapter.iterdir():
        assert members[original.name] == original.read_bytes()
    for safe, pickle in [
        ("adapter.safetensors", "pytorch_adapter.bin"),
        ("model_head.safetensors", "pytorch_model_head.bin"),
    ]:
        (tmp_path / safe).write_bytes(members[safe])  # the reader goes by the file suffix
        (tmp_path / pickle).write_bytes(members[pickle])
        a, b = read_state_dict(tmp_path / safe), read_state_dict(tmp_path / pickle)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_versions_are_immutable(catalogue, saved_adapter, other_adapter):
    first = publish(saved_adapter, version="1")
    again = publish(saved_adapter, version="1")
    assert again.pk == first.pk and VersionFile.objects.count() == len(BOTH_FORMATS)
    assert publish(saved_adapter).pk == first.pk  # no version given: the same bytes are found
    with pytest.raises(PublishError, match="immutable"):
        publish(other_adapter, version="1")
    second = publish(other_adapter)
    assert second.version == "2" and second.sha256 != first.sha256
    assert Adapter.objects.get().default_version == "2"
    assert AdapterVersion.objects.get(pk=first.pk).sha256 == first.sha256


def test_archives_are_deterministic(saved_adapter, tmp_path):
    names = sorted(p.name for p in saved_adapter.iterdir())
    write_archive(saved_adapter, names, tmp_path / "a.zip")
    write_archive(saved_adapter, names, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_architecture_mapping(catalogue, adapter_folder):
    edit_config(adapter_folder, non_linearity="gelu", reduction_factor=2)
    version = publish(adapter_folder, name="overridden")
    adapter = version.adapter
    assert adapter.architecture.name == "pfeiffer"
    assert adapter.config_overrides == {"using": "pfeiffer", "non_linearity": "gelu",
                                        "reduction_factor": 2}  # fmt: skip
    assert adapter.config_hash == "d345095bcb01e325"

    edit_config(adapter_folder, mh_adapter=True, original_ln_before=False,
                non_linearity="swish", reduction_factor=16)  # fmt: skip
    assert publish(adapter_folder).adapter.architecture.name == "houlsby"

    edit_config(adapter_folder, is_parallel=True)
    with pytest.raises(PublishError, match="no architecture of the catalogue matches"):
        publish(adapter_folder)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"subtask": "nope"}, "unknown subtask 'nope'"),
        ({"type": "nope"}, "unknown adapter type"),
        ({"org": "bad org"}, "org 'bad org' must"),
        ({"version": "../1"}, "version '../1' must"),
        ({"card_extra": {"evil": 1}}, "unknown card field"),
    ],
)
def test_clear_errors(catalogue, saved_adapter, kwargs, message):
    with pytest.raises(PublishError, match=message):
        publish(saved_adapter, **kwargs)
    assert not Adapter.objects.exists()


def test_bad_folders(catalogue, adapter_folder):
    (adapter_folder / "notes.txt").write_text("hi")
    with pytest.raises(PublishError, match=r"unexpected entries .*notes\.txt"):
        publish(adapter_folder)
    (adapter_folder / "notes.txt").unlink()
    (adapter_folder / "pytorch_adapter.bin").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(PublishError, match="pytorch_adapter.bin"):
        publish(adapter_folder)
    (adapter_folder / "pytorch_adapter.bin").unlink()
    data = json.loads((adapter_folder / "adapter_config.json").read_text())
    data["model_name"] = None
    (adapter_folder / "adapter_config.json").write_text(json.dumps(data))
    with pytest.raises(PublishError, match="no model_name"):
        publish(adapter_folder)
    assert publish(adapter_folder, card_extra={"model_name": "bert-base-uncased"}).adapter.name == (
        "bert-base-uncased_sentiment_sst-2_pfeiffer"
    )


def test_card_yaml_parses_and_survives_a_sync(db, saved_adapter, tmp_path, settings):
    """The hook of the upload workflow: commit render_card_yaml() to the Hub repo and sync."""
    settings.HUB_PUBLIC_URL = "https://hub.example.org"
    repo = make_git_repo(DEMO_SOURCE, tmp_path / "hub")
    assert sync_hub_repository(str(repo)).status == "succeeded"
    version = publish(saved_adapter, card_extra={"author": "Alice", "email": "a@example.org"})
    adapter = version.adapter
    text = render_card_yaml(adapter)
    path = f"adapters/{ORG}/{adapter.name}.yaml"
    parsed = hubformat.parse_file(path, text.encode())
    assert parsed.errors == [] and parsed.warnings == []
    assert parsed.data["files"] == [
        {
            "version": "1",
            "url": "https://hub.example.org" + version.url.removeprefix("https://hub.example.org"),
            "sha1": version.sha1,
            "sha256": version.sha256,
        }
    ]
    assert parsed.data["config"] == {"using": "pfeiffer"}

    (repo / path).parent.mkdir(parents=True)
    (repo / path).write_text(text)
    commit_all(repo, "publish")
    run = sync_hub_repository(str(repo))
    assert run.status == "succeeded" and run.errors == [], run.errors
    synced = AdapterVersion.objects.get(pk=version.pk)
    assert synced.file_status == AdapterVersion.FileStatus.HOSTED
    assert synced.storage_key == version.storage_key and synced.files.count() == 6
    assert Adapter.objects.get(pk=adapter.pk).source_path == path
    assert Adapter.objects.get(pk=adapter.pk).config_hash == adapter.config_hash


def test_publish_adapter_command(catalogue, saved_adapter):
    out = io.StringIO()
    call_command(
        "publish_adapter", str(saved_adapter), "--task", TASK, "--subtask", SUBTASK,
        "--org", ORG, "--name", "cmd", "--version", "0.1", "--card", '{"author": "Alice"}',
        stdout=out,
    )  # fmt: skip
    assert "published @alice/cmd version 0.1" in out.getvalue()
    version = AdapterVersion.objects.get(adapter__name="cmd")
    assert version.version == "0.1" and version.adapter.author == "Alice"
    with pytest.raises(CommandError, match="unknown task"):
        call_command("publish_adapter", str(saved_adapter), "--task", "x", "--subtask", "y",
                     "--org", ORG)  # fmt: skip
