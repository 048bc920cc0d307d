"""The legacy `/dist/v2/` index equals the original Hub's generated files, and follows its rules."""

import json

import pytest
import yaml

from hub_server.catalog.models import Adapter
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import DIST_EXAMPLES, SNAPSHOT

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(snapshot_repo):
    run = sync_hub_repository(str(snapshot_repo))
    assert run.errors == []


@pytest.mark.parametrize(
    "path",
    [
        "index/bert-base-uncased.json",
        "architectures.json",
        "adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.json",
    ],
)
def test_dist_files_equal_the_original(client, synced, path):
    response = client.get(f"/dist/v2/{path}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == json.loads((DIST_EXAMPLES / path).read_text())


def snapshot_cards():
    for path in sorted(SNAPSHOT.glob("adapters/*/*.y*ml")):
        yield path, yaml.safe_load(path.read_text())


def test_every_index_follows_the_rules(client, synced):
    models = sorted({card["model_name"] for _, card in snapshot_cards()})
    seen_cards = set()
    for model in models:
        index = client.get(f"/dist/v2/index/{model}.json").json()
        for task, subtasks in index.items():
            for subtask, entries in subtasks.items():
                paths = [
                    p for k, e in entries.items() if k != "default" for p in e["versions"].values()
                ]
                assert entries["default"] in paths
                for config_id, entry in entries.items():
                    if config_id == "default":
                        continue
                    for org, path in entry["versions"].items():
                        card = client.get(f"/dist/v2/{path}").json()
                        assert card["config_id"] == config_id
                        info = card["info"]
                        assert (info["model_name"], info["task"], info["subtask"]) == (
                            model,
                            task,
                            subtask,
                        )
                        assert info["username"] == org
                        assert card["default_version"] in card["files"]
                        seen_cards.add(path)
    # Every card of the snapshot is reachable from its model's index.
    assert len(seen_cards) == 291
    assert len(client.get("/dist/v2/all.json").json()) == 291


def test_default_prefers_pfeiffer_cards(client, synced):
    index = client.get("/dist/v2/index/bert-base-uncased.json").json()
    rte = index["nli"]["rte"]
    assert rte["default"] == "adapters/ukp/bert-base-uncased_nli_rte_pfeiffer.json"


def test_model_with_a_slash_is_a_subfolder_and_unknown_model_is_404(client, synced):
    slashed = Adapter.objects.filter(model_name__contains="/").values_list("model_name", flat=True)
    for model in set(slashed):
        assert client.get(f"/dist/v2/index/{model}.json").status_code == 200
    missing = client.get("/dist/v2/index/no-such-model.json")
    assert missing.status_code == 404
    assert "no adapters for model" in missing.json()["detail"]


def test_index_is_cached_and_invalidated_by_a_sync(client, snapshot_repo, synced):
    from tests.catalog.test_sync import SST2, edit_yaml
    from tests.conftest import commit_all

    first = client.get("/dist/v2/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.json")
    etag = first["ETag"]
    assert (
        client.get(
            "/dist/v2/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.json",
            HTTP_IF_NONE_MATCH=etag,
        ).status_code
        == 304
    )

    edit_yaml(snapshot_repo / SST2, default_version="1", files=[
        {"version": "1", "url": "https://example.org/a.zip", "sha1": "a" * 40, "score": 0.5}
    ])  # fmt: skip
    commit_all(snapshot_repo, "new file url")
    sync_hub_repository(str(snapshot_repo))

    second = client.get("/dist/v2/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.json")
    assert second["ETag"] != etag
    assert second.json()["files"]["1"] == {
        "url": "https://example.org/a.zip",
        "sha1": "a" * 40,
        "score": 0.5,
    }
