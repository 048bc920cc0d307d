"""No stale reads across processes: a running server (gunicorn, two workers) serves what another
process changed (`manage.py sync_hub`, `manage.py publish_adapter`, a download count written by
another process) within the stated bounds, on the embedded default (SQLite, no Redis) and on the
production setup (PostgreSQL + Redis). Nothing is reset between the change and the reads: the
server warms every read first, then only the bounds of hub_server/catalog/cache.py can help.
"""

from __future__ import annotations

import uuid

import pytest
import yaml
from django.conf import settings

from tests.conftest import INTEROP, SNAPSHOT, commit_all, make_git_repo
from tests.hubprocess import (
    HubProcesses,
    converge,
    create_database,
    drop_database,
    postgres_server,
)

pytestmark = pytest.mark.slow

RECHECK = 1.0  # HUB_CATALOG_RECHECK_SECONDS of the server
# HUB_RESPONSE_MAX_AGE of the server: longer than RECHECK + SLACK, so a catalogue change can only
# be seen in time through the generation, not because the entries aged out.
MAX_AGE = 12.0
# What a loaded two-core machine adds to a bound: requests queued behind a cold render.
SLACK = 4.0

GONE = ("ukp", "bert-base-uncased_sentiment_sst-2_houlsby")
EDITED = ("ukp", "bert-base-uncased_sentiment_sst-2_pfeiffer")
WORD = "quokkalicious"


@pytest.fixture(scope="module", params=["embedded", "postgres+redis"])
def hub(request, tmp_path_factory):
    """A migrated hub with the snapshot synced, its server started with the bounds above (one
    per setup for the module: each test changes other rows)."""
    tmp_path = tmp_path_factory.mktemp(f"live-{request.param}".replace("+", "-"))
    env = {
        "HUB_CATALOG_RECHECK_SECONDS": str(RECHECK),
        "HUB_RESPONSE_MAX_AGE": str(MAX_AGE),
        "HUB_SEARCH_INDEX_MAX_AGE": str(MAX_AGE),
        "HUB_SEARCH_INDEX_INLINE_MAX": "100000",
    }
    cleanup = []
    if request.param == "postgres+redis":
        server = postgres_server()
        if server is None:
            pytest.skip("the production setup needs PostgreSQL (DATABASE_URL)")
        import redis

        redis_url = "redis://127.0.0.1:6379/14"
        try:
            redis.Redis.from_url(redis_url).ping()
        except redis.RedisError:
            pytest.skip("no Redis at 127.0.0.1:6379")
        name = f"{settings.DATABASES['default']['NAME']}_live"
        database = create_database(server, name)
        prefix = f"live-{uuid.uuid4().hex}"
        env |= {
            "DATABASE_URL": database,
            "REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": prefix,
        }

        def drop():
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            drop_database(server, name)

        cleanup.append(drop)
    processes = HubProcesses(tmp_path / "hub", env=env)
    try:
        repo = make_git_repo(SNAPSHOT, tmp_path / "hub-repo")
        processes.manage("migrate", "-v0")
        processes.manage("sync_hub", str(repo))
        processes.start()
        yield processes, repo
    finally:
        processes.stop()
        for step in cleanup:
            step()


def _count(hub, query: str = "") -> int:
    return hub.get_json(f"/api/v1/adapters/?page_size=1{query}")[1]["count"]


def test_a_sync_run_by_another_process_reaches_every_read_within_the_bound(hub):
    hub, repo = hub
    org, name = GONE
    e_org, e_name = EDITED
    reads = {
        "list": "/api/v1/adapters/?page_size=1",
        "search": f"/api/v1/adapters/?q={WORD}",
        "detail gone": f"/api/v1/adapters/{org}/{name}/",
        "detail edited": f"/api/v1/adapters/{e_org}/{e_name}/",
        "dist": f"/dist/v2/adapters/{org}/{name}.json",
        "page": f"/adapters/{org}/{name}/",
        "search page": f"/search/?q={WORD}",
    }
    for _ in range(4):  # warm: each read stored by both workers (and in Redis)
        for path in reads.values():
            hub.get(path)
    before = _count(hub)
    assert hub.get(reads["detail gone"])[0] == hub.get(reads["dist"])[0] == 200
    assert _count(hub, f"&q={WORD}") == 0

    card_path = repo / "adapters" / e_org / f"{e_name}.yaml"
    card = yaml.safe_load(card_path.read_text())
    card["description"] = f"A {WORD} sentiment adapter."
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    (repo / "adapters" / org / f"{name}.yaml").unlink()
    commit_all(repo, "withdraw one card, edit another")
    hub.manage("sync_hub", str(repo))  # another process: the server is told nothing

    def synced():
        stale = []
        if _count(hub) != before - 1:
            stale.append("list")
        found = hub.get_json(reads["search"])[1]["results"]
        if [r["id"] for r in found] != [f"@{e_org}/{e_name}"]:
            stale.append("search")
        if hub.get(reads["detail gone"])[0] != 410:
            stale.append("detail gone")
        if WORD not in hub.get_json(reads["detail edited"])[1]["description"]:
            stale.append("detail edited")
        if hub.get(reads["dist"])[0] != 404:
            stale.append("dist")
        if hub.get(reads["page"])[0] != 410:
            stale.append("page")
        if e_name.encode() not in hub.get(reads["search page"])[1]:
            stale.append("search page")
        return stale or True

    converge(synced, within=RECHECK + SLACK)


def test_a_publish_by_another_process_reaches_hf_and_the_lists_within_the_bound(hub):
    hub, _ = hub
    reads = [
        "/hf/api/models/live/hosted",
        "/hf/api/models?author=live",
        "/api/v1/adapters/live/hosted/",
    ]
    for _ in range(4):
        for path in reads:
            hub.get(path)
    assert hub.get(reads[0])[0] == 404 and hub.get_json(reads[1])[1] == []
    before = _count(hub)
    folder = INTEROP / "tiny-bert" / "seq_bn" / "a"
    hub.manage("publish_adapter", str(folder), "--task", "sentiment", "--subtask", "sst-2",
               "--org", "live", "--name", "hosted")  # fmt: skip

    def published():
        stale = []
        if hub.get(reads[0])[0] != 200:
            stale.append("hf model info")
        if [m["id"] for m in hub.get_json(reads[1])[1]] != ["live/hosted"]:
            stale.append("hf search")
        if hub.get(reads[2])[0] != 200:
            stale.append("detail")
        if _count(hub) != before + 1:
            stale.append("list")
        return stale or True

    converge(published, within=RECHECK + SLACK)


def test_download_counts_written_by_another_process_reach_the_lists_within_the_max_age(hub):
    hub, _ = hub
    org, name = EDITED
    top = "/api/v1/adapters/?ordering=-downloads&page_size=1"
    for _ in range(4):
        hub.get(top)
        hub.get(f"/api/v1/adapters/{org}/{name}/")
    assert hub.get_json(top)[1]["results"][0]["id"] != f"@{org}/{name}"
    hub.manage(
        "shell",
        "-c",
        "from django.db.models import F; from hub_server.catalog.models import Adapter; "
        f"Adapter.objects.filter(org={org!r}, name={name!r}).update(downloads=F('downloads') + 10**6)",
    )  # counted as a download is: no catalogue change, no new generation

    def counted():
        first = hub.get_json(top)[1]["results"][0]
        detail = hub.get_json(f"/api/v1/adapters/{org}/{name}/")[1]
        if first["id"] != f"@{org}/{name}" or detail["downloads"] < 10**6:
            return {"top": first["id"], "detail downloads": detail["downloads"]}
        return True

    converge(counted, within=MAX_AGE + SLACK)
