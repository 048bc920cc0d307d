"""resolve_adapter_path against a local HTTP server: index lookup, downloads, cache, extraction."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from adapters_core import hub
from adapters_core.configuration.hashing import (
    config_hash,
    config_hash_candidates,
    get_adapter_config_hash,
)
from adapters_core.errors import (
    AdapterError,
    AdapterNotFoundError,
    ChecksumMismatchError,
    UnsafeArchiveError,
)
from adapters_core.hub import AmbiguousIdentifierError, ExtractionLimits, resolve_adapter_path
from tests.core.hub_fixtures import (
    ARCHITECTURES,
    FakeServer,
    adapter_files,
    build_fake_hub,
    make_raw_name_zip,
    make_symlink_zip,
    make_zip,
    read_marker,
    sha256_of,
)

INTEROP = Path(__file__).resolve().parents[2].parent / "shared/interop/adapters-1.3.0"
MODEL = "bert-base-uncased"


@pytest.fixture
def server():
    with FakeServer() as running:
        yield running


@pytest.fixture
def fake_hub(server, monkeypatch, tmp_path):
    hub_index = build_fake_hub(server)
    monkeypatch.setenv("ADAPTERHUB_INDEX_URL", hub_index.base)
    monkeypatch.setenv("ADAPTERS_CORE_CACHE", str(tmp_path / "cache"))
    # An org/name fallback must never leave the machine.
    monkeypatch.setenv("HF_ENDPOINT", server.url("/hf"))
    return hub_index


def resolve(identifier: str, **kwargs) -> str:
    kwargs.setdefault("model_name", MODEL)
    return resolve_adapter_path(identifier, **kwargs)


# ---------------------------------------------------------------------------------------------
# Config hash
# ---------------------------------------------------------------------------------------------


def test_config_hash_matches_the_known_hub_values():
    arch = json.loads((ARCHITECTURES / "architectures.json").read_text())
    assert config_hash(arch["pfeiffer"]) == "9076f36a74755ac4"
    assert config_hash(arch["houlsby"]) == "b1017368d7a97b11"
    assert config_hash(arch["pfeiffer+inv"]) == "9ed5b5a29de19b71"
    assert config_hash(arch["houlsby+inv"]) == "bcdbfdc759d7abf1"
    gelu = {**arch["pfeiffer"], "non_linearity": "gelu", "reduction_factor": 2}
    assert config_hash(gelu) == "d345095bcb01e325"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("seq_bn", "9076f36a74755ac4"),
        ("double_seq_bn", "b1017368d7a97b11"),
        ("seq_bn_inv", "9ed5b5a29de19b71"),
    ],
)
def test_full_config_written_by_adapters_hashes_like_its_architecture(case, expected):
    saved = json.loads((INTEROP / "tiny-bert" / case / "a" / "adapter_config.json").read_text())
    assert get_adapter_config_hash(saved["config"]) == expected
    assert expected in config_hash_candidates(saved["config"])


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def test_index_base_precedence(monkeypatch):
    monkeypatch.delenv("ADAPTERHUB_INDEX_URL", raising=False)
    monkeypatch.delenv("ADAPTERHUB_URL", raising=False)
    assert hub.index_base_url() == hub.DEFAULT_INDEX_URL
    monkeypatch.setenv("ADAPTERHUB_URL", "http://hub.local:8000/")
    assert hub.index_base_url() == "http://hub.local:8000/dist/v2/"
    monkeypatch.setenv("ADAPTERHUB_INDEX_URL", "http://mirror.local/dist/v2")
    assert hub.index_base_url() == "http://mirror.local/dist/v2/"


def test_adapterhub_url_serves_the_index(server, monkeypatch, tmp_path):
    build_fake_hub(server)
    monkeypatch.delenv("ADAPTERHUB_INDEX_URL", raising=False)
    monkeypatch.setenv("ADAPTERHUB_URL", server.base_url)
    folder = resolve("sentiment/imdb@ukp", cache_dir=tmp_path / "c")
    assert read_marker(folder) == 7.0


# ---------------------------------------------------------------------------------------------
# Resolution branches
# ---------------------------------------------------------------------------------------------


def test_local_folder_is_returned_as_is(tmp_path, server):
    assert resolve_adapter_path(str(tmp_path)) == str(tmp_path)
    assert server.requests == []


def test_missing_local_path_is_not_found(tmp_path):
    with pytest.raises(AdapterNotFoundError, match="no adapter folder"):
        resolve_adapter_path(str(tmp_path / "nope"))


def test_unique_id(fake_hub):
    folder = resolve("@ukp/sst2_houlsby", model_name=None)
    assert read_marker(folder) == 4.0
    assert sorted(p.name for p in Path(folder).iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
    ]


def test_unique_id_unknown(fake_hub):
    with pytest.raises(AdapterNotFoundError, match="@ukp/nothing"):
        resolve("@ukp/nothing")


def test_task_subtask_org_with_config_string(fake_hub):
    assert read_marker(resolve("sentiment/sst-2@ukp", config="pfeiffer")) == 1.0
    assert read_marker(resolve("sentiment/sst-2@ukp", config="houlsby")) == 4.0
    assert read_marker(resolve("sentiment/sst-2@ukp", config="double_seq_bn")) == 4.0
    assert read_marker(resolve("sentiment/sst-2@other", config="seq_bn")) == 3.0


def test_config_string_with_arguments(fake_hub):
    folder = resolve(
        "sentiment/sst-2@ukp", config="pfeiffer[non_linearity=gelu, reduction_factor=2]"
    )
    assert read_marker(folder) == 5.0


def test_config_dict_as_saved_by_adapters(fake_hub):
    saved = json.loads((INTEROP / "tiny-bert/double_seq_bn/a/adapter_config.json").read_text())
    assert read_marker(resolve("sentiment/sst-2@ukp", config=saved["config"])) == 4.0


def test_task_subtask_without_config_uses_default(fake_hub):
    assert read_marker(resolve("sentiment/sst-2")) == 1.0


def test_unmatched_config_falls_back_to_default_unless_strict(fake_hub):
    assert read_marker(resolve("sentiment/sst-2", config="pfeiffer[reduction_factor=3]")) == 1.0
    with pytest.raises(AdapterNotFoundError, match="no adapter matching 'sentiment/sst-2'"):
        resolve("sentiment/sst-2", config="pfeiffer[reduction_factor=3]", strict=True)


def test_unknown_config_name_is_ignored_unless_strict(fake_hub):
    assert read_marker(resolve("sentiment/sst-2", config="lora")) == 1.0
    with pytest.raises(AdapterNotFoundError):
        resolve("sentiment/sst-2", config="lora", strict=True)


def test_config_matches_but_org_has_no_such_adapter(fake_hub):
    with pytest.raises(AdapterNotFoundError, match="nobody"):
        resolve("sentiment/sst-2@nobody", config="pfeiffer")


def test_single_part_subtask(fake_hub):
    assert read_marker(resolve("imdb")) == 7.0


def test_single_part_task_with_one_subtask(fake_hub):
    assert read_marker(resolve("lang")) == 8.0


def test_only_config_without_default_uses_the_org(fake_hub):
    assert read_marker(resolve("de@ukp")) == 8.0


def test_multiple_matches_are_ambiguous(fake_hub):
    with pytest.raises(
        AmbiguousIdentifierError, match="Found multiple possible adapters matching 'sst-2@ukp'"
    ):
        resolve("sst-2@ukp")
    with pytest.raises(AmbiguousIdentifierError, match="Found multiple possible adapters"):
        resolve("sentiment")


def test_several_orgs_for_one_config_without_default(fake_hub):
    with pytest.raises(
        AmbiguousIdentifierError,
        match="Multiple adapters with this name are available for this config.",
    ):
        resolve("qa/squad", config="pfeiffer")
    assert read_marker(resolve("qa/squad@bob", config="pfeiffer")) == 10.0


def test_nothing_matches(fake_hub):
    with pytest.raises(AdapterNotFoundError, match="no adapter matching 'nothing@ukp'"):
        resolve("nothing@ukp")


def test_unknown_model_has_no_index(fake_hub):
    with pytest.raises(AdapterNotFoundError) as info:
        resolve("sst-2@ukp", model_name="gpt-17")
    assert str(info.value) == f"no adapters for model gpt-17 on {fake_hub.base}"


def test_identifier_needs_model_name(fake_hub):
    with pytest.raises(AdapterNotFoundError, match="model_name"):
        resolve_adapter_path("sst-2@ukp")


def test_versions(fake_hub):
    assert read_marker(resolve("sentiment/sst-2@ukp", config="pfeiffer", version="2")) == 2.0
    with pytest.raises(AdapterNotFoundError, match=r"version '9'.*available: 1, 2"):
        resolve("sentiment/sst-2@ukp", config="pfeiffer", version="9")


def test_index_server_unreachable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTERHUB_INDEX_URL", "http://127.0.0.1:9/dist/v2/")
    with pytest.raises(AdapterError, match="could not fetch http://127.0.0.1:9/dist/v2/index"):
        resolve("sst-2@ukp", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Cache and checksums
# ---------------------------------------------------------------------------------------------


def test_second_resolution_downloads_nothing(fake_hub, server):
    first = resolve("sentiment/sst-2@ukp", config="pfeiffer")
    archive_requests = server.requested("/files/")
    assert archive_requests == ["/files/ukp/sst2_pfeiffer-1.zip"]
    second = resolve("sentiment/sst-2@ukp", config="pfeiffer")
    assert second == first
    assert server.requested("/files/") == archive_requests
    assert Path(first).name == sha256_of(fake_hub.archives["/files/ukp/sst2_pfeiffer-1.zip"])


def test_sha1_only_entry_is_verified_and_cached(fake_hub, server):
    first = resolve("sentiment/imdb")
    assert resolve("sentiment/imdb") == first
    assert server.requested("/files/") == ["/files/ukp/imdb-1.zip"]


def test_checksum_mismatch_extracts_nothing(fake_hub, tmp_path):
    archive = fake_hub.archives["/files/ukp/bad_checksum-1.zip"]
    with pytest.raises(ChecksumMismatchError) as info:
        resolve("sentiment/broken")
    message = str(info.value)
    assert "expected sha256 " + "0" * 64 in message
    assert f"got {sha256_of(archive)}" in message
    cache = tmp_path / "cache"
    assert not (cache / "archives").exists() or not any((cache / "archives").iterdir())
    assert not any((cache / "tmp").iterdir())


def test_url_archive_is_downloaded_once(server, tmp_path):
    url = server.add("/some/adapter.zip", make_zip(adapter_files("x", 12.0), folder="x"))
    folder = resolve_adapter_path(url, cache_dir=tmp_path)
    assert read_marker(folder) == 12.0
    assert resolve_adapter_path(url, cache_dir=tmp_path) == folder
    assert server.requested("/some/") == ["/some/adapter.zip"]


def test_url_that_is_not_a_zip(server, tmp_path):
    url = server.add("/some/adapter.tar.gz", b"\x1f\x8b\x08\x00 not a zip")
    with pytest.raises(UnsafeArchiveError, match="only zip"):
        resolve_adapter_path(url, cache_dir=tmp_path)


def test_url_404(server, tmp_path):
    with pytest.raises(AdapterError, match="HTTP 404"):
        resolve_adapter_path(server.url("/missing.zip"), cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Safe extraction
# ---------------------------------------------------------------------------------------------


def _serve_and_resolve(server, tmp_path, archive: bytes) -> str:
    url = server.add("/evil.zip", archive)
    return hub.download_archive(url, sha256=sha256_of(archive), cache_dir=tmp_path / "cache")


def _assert_nothing_extracted(tmp_path):
    cache = tmp_path / "cache"
    assert not (cache / "archives").exists() or not any((cache / "archives").iterdir())
    assert not any((cache / "tmp").iterdir())
    assert not (tmp_path / "pwned").exists()


def test_dotdot_member_is_refused(server, tmp_path):
    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        _serve_and_resolve(server, tmp_path, make_raw_name_zip("../../pwned"))
    _assert_nothing_extracted(tmp_path)


def test_absolute_member_is_refused(server, tmp_path):
    target = tmp_path / "pwned"
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        _serve_and_resolve(server, tmp_path, make_raw_name_zip(str(target)))
    _assert_nothing_extracted(tmp_path)


def test_backslash_dotdot_member_is_refused(server, tmp_path):
    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        _serve_and_resolve(server, tmp_path, make_raw_name_zip("a\\..\\..\\pwned"))


def test_symlink_member_is_refused(server, tmp_path):
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        _serve_and_resolve(server, tmp_path, make_symlink_zip())
    _assert_nothing_extracted(tmp_path)


def test_zip_bomb_ratio_is_refused(server, tmp_path):
    bomb = make_zip({"adapter_config.json": b"{}", "pytorch_adapter.bin": bytes(64 * 1024 * 1024)})
    assert len(bomb) < 200_000
    with pytest.raises(UnsafeArchiveError, match="compression ratio"):
        _serve_and_resolve(server, tmp_path, bomb)
    _assert_nothing_extracted(tmp_path)


def test_total_size_cap(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERS_CORE_MAX_ARCHIVE_BYTES", "1000")
    archive = make_zip({"adapter_config.json": b"{}", "adapter.safetensors": bytes(range(256)) * 8})
    with pytest.raises(UnsafeArchiveError, match="more than 1000 bytes"):
        _serve_and_resolve(server, tmp_path, archive)
    _assert_nothing_extracted(tmp_path)


def test_too_many_files(server, tmp_path):
    archive = make_zip({f"f{i}.json": b"{}" for i in range(1001)})
    with pytest.raises(UnsafeArchiveError, match="1001 members; at most 1000"):
        _serve_and_resolve(server, tmp_path, archive)
    _assert_nothing_extracted(tmp_path)


def test_download_size_cap(server, tmp_path):
    archive = make_zip(adapter_files("x"))
    url = server.add("/big.zip", archive)
    limits = ExtractionLimits(max_download_bytes=100)
    with pytest.raises(UnsafeArchiveError, match="at most 100"):
        hub.download_archive(url, cache_dir=tmp_path, limits=limits)


def test_flat_and_single_folder_layouts(tmp_path):
    for index, folder in enumerate([None, "adapter_dir"]):
        archive_path = tmp_path / f"a{index}.zip"
        archive_path.write_bytes(make_zip(adapter_files("x"), folder=folder))
        target = hub.safe_extract_zip(archive_path, tmp_path / f"out{index}")
        assert sorted(p.name for p in target.iterdir()) == [
            "adapter.safetensors",
            "adapter_config.json",
        ]


def test_macos_metadata_is_skipped(tmp_path):
    files = {f"x/{k}": v for k, v in adapter_files("x").items()}
    files["__MACOSX/x/._adapter_config.json"] = b"junk"
    archive_path = tmp_path / "a.zip"
    archive_path.write_bytes(make_zip(files))
    target = hub.safe_extract_zip(archive_path, tmp_path / "out")
    assert sorted(p.name for p in target.iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
    ]


def test_duplicate_members_are_refused(tmp_path):
    archive_path = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("adapter_config.json", b"{}")
        with pytest.warns(UserWarning):
            archive.writestr("adapter_config.json", b"{}")
    with pytest.raises(UnsafeArchiveError, match="twice"):
        hub.safe_extract_zip(archive_path, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Hugging-Face-compatible endpoint
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def hf_repo(server, monkeypatch, tmp_path):
    main = adapter_files("demo", 20.0)
    v1 = adapter_files("demo", 21.0)
    server.add_hf_repo("alice/demo", {"main": main, "v1": v1})
    monkeypatch.setenv("HF_ENDPOINT", server.url("/hf"))
    monkeypatch.setenv("ADAPTERS_CORE_CACHE", str(tmp_path / "cache"))
    return server


def test_org_name_from_hf_endpoint(hf_repo):
    folder = resolve_adapter_path("alice/demo")
    assert read_marker(folder) == 20.0
    assert hf_repo.requested("/hf/api/models/alice/demo/revision/main")
    assert read_marker(resolve_adapter_path("alice/demo", version="v1")) == 21.0


def test_org_name_unknown_repo_and_revision(hf_repo):
    with pytest.raises(AdapterNotFoundError, match="no repository alice/nothing"):
        resolve_adapter_path("alice/nothing")
    with pytest.raises(AdapterNotFoundError, match="no revision 'v9'"):
        resolve_adapter_path("alice/demo", version="v9")


def test_org_name_falls_back_to_hf_after_the_index(fake_hub, hf_repo, server):
    folder = resolve("alice/demo")
    assert read_marker(folder) == 20.0
    assert server.requested("/dist/v2/index/bert-base-uncased.json")


def test_not_found_anywhere_names_both_sources(fake_hub, hf_repo):
    with pytest.raises(AdapterNotFoundError) as info:
        resolve("sentiment/nothing")
    message = str(info.value)
    assert "no adapter matching 'sentiment/nothing'" in message
    assert "no repository sentiment/nothing" in message


def test_org_name_falls_back_to_hf_when_the_index_is_unreachable(hf_repo, monkeypatch):
    monkeypatch.setenv("ADAPTERHUB_INDEX_URL", "http://127.0.0.1:9/dist/v2/")
    assert read_marker(resolve("alice/demo")) == 20.0


def test_ambiguous_task_subtask_does_not_fall_back_to_hf(fake_hub, hf_repo):
    hf_repo.add_hf_repo("qa/squad", {"main": adapter_files("squad", 30.0)})
    with pytest.raises(AmbiguousIdentifierError):
        resolve("qa/squad", config="pfeiffer")


def test_hub_reads_config_strings_like_add_adapter(fake_hub):
    """One parser: the hub and add_adapter agree on a config string (quotes, None, spaces)."""
    from adapters_core.configuration import AdapterConfig
    from adapters_core.hub import index_base_url, resolve_config_dict

    text = "pfeiffer[ non_linearity='gelu', reduction_factor=2, init_weights_seed=none ]"
    full = resolve_config_dict(text, index_base_url())
    assert full is not None
    assert full["non_linearity"] == "gelu" and full["reduction_factor"] == 2
    assert full["init_weights_seed"] is None
    assert AdapterConfig.load(text)["init_weights_seed"] is None
