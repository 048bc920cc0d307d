"""/hf/ against the installed huggingface_hub client, over a live server thread."""

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import pytest
import requests
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub_server import storage
from hub_server.catalog.models import Adapter, AdapterVersion, VersionFile
from hub_server.uploads.publishing import publish_adapter_folder
from tests.hosting.conftest import ORG, SUBTASK, TASK, eventually

REPO = f"{ORG}/tiny-bert_sentiment_sst-2_pfeiffer"
MEMBERS = [
    "adapter.safetensors",
    "adapter_config.json",
    "head_config.json",
    "model_head.safetensors",
    "pytorch_adapter.bin",
    "pytorch_model_head.bin",
]


@pytest.fixture(autouse=True)
def hf_client(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield
    huggingface_hub.utils.close_session()  # its keep-alive connections hold server threads


@pytest.fixture
def repo(catalogue, saved_adapter, other_adapter):
    """alice/tiny-bert_sentiment_sst-2_pfeiffer with versions 1 and 2 (main), and alice/second."""
    first = publish_adapter_folder(saved_adapter, task=TASK, subtask=SUBTASK, org=ORG)
    second = publish_adapter_folder(other_adapter, task=TASK, subtask=SUBTASK, org=ORG)
    publish_adapter_folder(saved_adapter, task=TASK, subtask="imdb", org=ORG, name="second")
    return first, second


@pytest.fixture
def endpoint(live_server):
    return live_server.url + "/hf"


def stored(version, path):
    f = VersionFile.objects.get(version=version, path=path)
    return b"".join(storage.iter_blob(f.storage_key))


def test_snapshot_download(repo, endpoint, tmp_path):
    first, second = repo
    info = HfApi(endpoint=endpoint, token=False).model_info(REPO)
    folder = Path(snapshot_download(REPO, endpoint=endpoint, cache_dir=tmp_path, token=False))
    assert folder.name == info.sha and len(info.sha) == 40
    assert sorted(p.name for p in folder.iterdir()) == sorted([*MEMBERS, "README.md"])
    for member in MEMBERS:
        assert (folder / member).read_bytes() == stored(second, member), member
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: adapter-transformers\n")
    assert "- adapterhub:sentiment/sst-2" in readme and "base_model: tiny-bert" in readme

    old = Path(snapshot_download(REPO, revision="1", endpoint=endpoint, cache_dir=tmp_path,
                                 token=False))  # fmt: skip
    assert old.name != folder.name
    assert (old / "adapter.safetensors").read_bytes() == stored(first, "adapter.safetensors")
    assert (tmp_path / f"models--{ORG}--{REPO.split('/')[1]}" / "refs" / "1").read_text() == (
        old.name
    )
    # one download per snapshot: the fetch of adapter_config.json (version 1 has the same
    # adapter_config.json, a blob already in the cache, so the client did not fetch it again)
    assert eventually(lambda: AdapterVersion.objects.get(pk=second.pk).downloads, 1) == 1
    assert AdapterVersion.objects.get(pk=first.pk).downloads == 0


def test_model_info_and_tree(repo, endpoint):
    first, second = repo
    api = HfApi(endpoint=endpoint, token=False)
    info = api.model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.library_name == "adapter-transformers"
    assert info.tags == ["adapter-transformers", "adapterhub:sentiment/sst-2", "bert"]
    assert info.card_data.base_model == "tiny-bert" and info.card_data.datasets == ["glue"]
    assert info.last_modified is not None and info.downloads == 0
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == sorted([*MEMBERS, "README.md"])
    weights = siblings["adapter.safetensors"]
    assert (
        weights.lfs.sha256 == VersionFile.objects.get(version=second, path=weights.rfilename).sha256
    )
    assert siblings["adapter_config.json"].lfs is None
    assert siblings["adapter_config.json"].size == len(stored(second, "adapter_config.json"))

    by_version = api.model_info(REPO, revision="1")
    assert by_version.sha != info.sha
    assert api.model_info(REPO, revision=by_version.sha).sha == by_version.sha
    assert api.model_info(REPO, revision="main").sha == info.sha  # stable per version

    entries = {e.path: e for e in api.list_repo_tree(REPO, revision=info.sha, recursive=True)}
    assert sorted(entries) == sorted(siblings)
    assert entries["pytorch_adapter.bin"].lfs.sha256 == siblings["pytorch_adapter.bin"].lfs.sha256
    assert entries["pytorch_adapter.bin"].size == siblings["pytorch_adapter.bin"].size


def test_list_models(repo, endpoint):
    api = HfApi(endpoint=endpoint, token=False)
    assert sorted(m.id for m in api.list_models(search="tiny")) == [REPO]
    assert sorted(m.id for m in api.list_models(author=ORG)) == [f"{ORG}/second", REPO]
    assert [m.id for m in api.list_models(filter="adapterhub:sentiment/imdb")] == [f"{ORG}/second"]
    assert [m.id for m in api.list_models(filter=["bert", "adapterhub:sentiment/sst-2"])] == [REPO]
    assert list(api.list_models(author="nobody")) == []
    assert len(list(api.list_models(limit=1))) == 1
    Adapter.objects.filter(name="second").update(downloads=5)
    assert [m.id for m in api.list_models(sort="downloads")] == [f"{ORG}/second", REPO]
    full = list(api.list_models(search="second", full=True))
    assert full[0].sha and full[0].siblings

    first = requests.get(f"{endpoint}/api/models", params={"limit": 1, "sort": "id"}, timeout=10)
    assert [m["id"] for m in first.json()] == [f"{ORG}/second"]
    link = first.headers["Link"]
    assert link.startswith(f"<{endpoint}/api/models?") and link.endswith('>; rel="next"')
    following = requests.get(link[1 : link.index(">")], timeout=10)
    assert [m["id"] for m in following.json()] == [REPO] and "Link" not in following.headers


def test_resolve_headers_and_errors(repo, endpoint, tmp_path):
    first, second = repo
    info = HfApi(endpoint=endpoint, token=False).model_info(REPO)
    url = f"{endpoint}/{REPO}/resolve/main/adapter.safetensors"
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == info.sha
    sha256 = VersionFile.objects.get(version=second, path="adapter.safetensors").sha256
    assert head.headers["ETag"] == f'"{sha256}"'
    assert head.headers["Content-Length"] == str(len(stored(second, "adapter.safetensors")))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert "Location" not in head.headers
    assert not [h for h in head.headers if h.lower().startswith("x-xet") or h == "Link"]
    config = requests.head(f"{endpoint}/{REPO}/resolve/{info.sha}/adapter_config.json", timeout=10)
    assert config.headers["ETag"].startswith('W/"') and config.headers["X-Repo-Commit"] == info.sha

    part = requests.get(url, headers={"Range": "bytes=5-"}, timeout=10)
    assert part.status_code == 206 and part.content == stored(second, "adapter.safetensors")[5:]

    missing = requests.head(f"{endpoint}/{REPO}/resolve/main/config.json", timeout=10)
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == info.sha
    bad_rev = requests.get(f"{endpoint}/{REPO}/resolve/nope/adapter_config.json", timeout=10)
    assert bad_rev.status_code == 404 and bad_rev.headers["X-Error-Code"] == "RevisionNotFound"
    no_repo = requests.get(f"{endpoint}/api/models/{ORG}/nope", timeout=10)
    assert no_repo.status_code == 404 and no_repo.headers["X-Error-Code"] == "RepoNotFound"

    kwargs = {"endpoint": endpoint, "cache_dir": tmp_path, "token": False}
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "config.json", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "adapter_config.json", revision="nope", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{ORG}/nope", "adapter_config.json", **kwargs)

    whoami = requests.get(f"{endpoint}/api/whoami-v2", timeout=10)
    assert whoami.status_code == 401 and "error" in whoami.json()


def test_yanked_repo_serves_exact_versions_only(repo, endpoint, tmp_path):
    Adapter.objects.filter(name=REPO.split("/")[1]).update(status=Adapter.Status.YANKED)
    kwargs = {"endpoint": endpoint, "cache_dir": tmp_path, "token": False}
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "adapter_config.json", **kwargs)
    assert Path(hf_hub_download(REPO, "adapter_config.json", revision="1", **kwargs)).exists()
    assert REPO not in [m.id for m in HfApi(endpoint=endpoint, token=False).list_models()]


class CuttingProxy:
    """A TCP proxy that drops the first GET of `needle` after `cut_after` bytes of its response,
    as a flaky network would; it records every request it forwards."""

    def __init__(self, target: tuple[str, int], needle: bytes, cut_after: int):
        self.target, self.needle, self.cut_after = target, needle, cut_after
        self.requests: list[bytes] = []
        self.cut = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        upstream = socket.create_connection(self.target)
        state = {"armed": False, "sent": 0}

        def pump_requests():
            try:
                while data := client.recv(65536):
                    self.requests.append(data)
                    if not self.cut and data.startswith(b"GET ") and self.needle in data:
                        state["armed"], state["sent"] = True, 0
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                upstream.close()

        threading.Thread(target=pump_requests, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                if state["armed"]:
                    state["sent"] += len(data)
                    if state["sent"] > self.cut_after:
                        self.cut = True
                        client.sendall(data[: len(data) - (state["sent"] - self.cut_after)])
                        break
                client.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the other thread's recv at once
                except OSError:
                    pass
                sock.close()

    def close(self):
        self.server.close()


def test_interrupted_download_resumes_with_range(repo, live_server, tmp_path):
    """huggingface_hub's own resume: the body breaks at 15 MB, the client re-GETs with Range."""
    first, second = repo
    big = os.urandom(16 * 1024 * 1024 + 123)
    blob = storage.store_bytes(big)
    VersionFile.objects.create(
        version=second, path="big.bin", size=blob.size, sha256=blob.sha256,
        git_oid=blob.digests.git_oid, storage_key=blob.key,
    )  # fmt: skip
    target = urlparse(live_server.url)
    proxy = CuttingProxy((target.hostname, target.port), b"big.bin", 15 * 1024 * 1024)
    try:
        path = hf_hub_download(
            REPO, "big.bin", endpoint=f"http://127.0.0.1:{proxy.port}/hf",
            cache_dir=tmp_path, token=False,
        )  # fmt: skip
    finally:
        proxy.close()
    assert proxy.cut
    assert Path(path).read_bytes() == big
    ranges = [r for r in proxy.requests if b"range: bytes=" in r.lower()]
    assert len(ranges) == 1 and b"bytes=10485760-" in ranges[0]


def test_whoami_answers_for_a_hub_token(endpoint):
    from huggingface_hub import HfApi

    from hub_server.accounts import services as accounts

    user = accounts.get_or_create_user("carol", "carol@example.org")
    accounts.add_member(accounts.create_organisation("carol-lab", owner=user), user)
    _, secret = accounts.create_token(user, name="laptop", scope="write")

    me = HfApi(endpoint=endpoint).whoami(token=secret)
    assert me["name"] == "carol"
    assert [o["name"] for o in me["orgs"]] == ["carol-lab"]
    assert me["auth"]["accessToken"]["role"] == "write"
    wrong = requests.get(
        f"{endpoint}/api/whoami-v2", headers={"Authorization": "Bearer ahub_wrong"}, timeout=10
    )
    assert wrong.status_code == 401


def test_an_old_sha_keeps_its_bytes_after_the_card_changes(repo, endpoint, tmp_path):
    """Each version's README.md and commit sha are fixed when it is published: editing the
    adapter's description later changes neither, so `revision=<old sha>` still resolves."""
    first, _ = repo
    api = HfApi(endpoint=endpoint, token=False)
    old_sha = api.list_repo_commits(REPO)[-1].commit_id
    before = Path(hf_hub_download(REPO, "README.md", revision=old_sha, endpoint=endpoint,
                                  cache_dir=tmp_path / "a", token=False)).read_bytes()  # fmt: skip
    Adapter.objects.filter(org=ORG).update(description="A description written later.")
    assert [c.commit_id for c in api.list_repo_commits(REPO)][-1] == old_sha
    after = Path(hf_hub_download(REPO, "README.md", revision=old_sha, endpoint=endpoint,
                                 cache_dir=tmp_path / "b", token=False)).read_bytes()  # fmt: skip
    assert after == before and b"written later" not in after
    assert AdapterVersion.objects.get(pk=first.pk).hf_sha == old_sha


def test_versions_published_before_frozen_shas_are_frozen_on_first_read(repo, endpoint):
    first, _ = repo
    sha = AdapterVersion.objects.get(pk=first.pk).hf_sha
    AdapterVersion.objects.filter(pk=first.pk).update(hf_sha="", hf_readme="")
    api = HfApi(endpoint=endpoint, token=False)
    assert api.model_info(REPO, revision="1").sha == sha  # same formula, same card
    assert AdapterVersion.objects.get(pk=first.pk).hf_sha == sha


def test_publishing_a_new_card_leaves_the_older_versions_readme(
    catalogue, saved_adapter, other_adapter
):
    """Frozen at its own publish; one published before the frozen fields (none stored, nobody
    read it yet) is frozen before a new version's card replaces the adapter's."""
    first = publish_adapter_folder(saved_adapter, task=TASK, subtask=SUBTASK, org=ORG)
    assert AdapterVersion.objects.get(pk=first.pk).hf_sha
    AdapterVersion.objects.filter(pk=first.pk).update(hf_sha="", hf_readme="")
    publish_adapter_folder(
        other_adapter, task=TASK, subtask=SUBTASK, org=ORG,
        card_extra={"description": "Card of version 2."},
    )  # fmt: skip
    first.refresh_from_db()
    assert first.hf_sha and "Card of version 2." not in first.hf_readme
