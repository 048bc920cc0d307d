"""Redis down: a running server (gunicorn, PostgreSQL, REDIS_URL at a private redis-server) keeps
answering every read from PostgreSQL, with the same bytes, when Redis stops or was never
reachable; throttles fail open; /readyz reports the cache as degraded while /healthz stays ok; and
the cache is used again once Redis is back. (Uploads with Redis down: other tests here.)"""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.conftest import INTEROP, SNAPSHOT, make_git_repo
from tests.hubprocess import (
    HubProcesses,
    RedisServer,
    converge,
    create_database,
    drop_database,
    free_port,
    postgres_server,
)

pytestmark = pytest.mark.slow

RETRY = 1.0  # HUB_CACHE_RETRY_SECONDS of the server
SST2 = "ukp/bert-base-uncased_sentiment_sst-2_pfeiffer"
# Every face of the hub: pages, the REST API, the legacy index, the Hugging Face subset.
READS = [
    "/",
    "/adapters/?task=sentiment",
    "/search/?q=sst-2",
    f"/adapters/{SST2}/",
    "/api/v1/adapters/",
    "/api/v1/adapters/?q=sst-2&ordering=name",
    "/api/v1/adapters/?model_name=bert-base-uncased&cursor=",
    f"/api/v1/adapters/{SST2}/",
    "/api/v1/facets/?task=sentiment",
    "/api/v1/tasks/",
    "/api/v1/sync/runs/",
    "/dist/v2/architectures.json",
    "/dist/v2/index/bert-base-uncased.json",
    f"/dist/v2/adapters/{SST2}.json",
    "/hf/api/models?author=live",
    "/hf/api/models/live/hosted",
    "/hf/api/models/live/hosted/tree/main",
    "/hf/live/hosted/resolve/main/adapter_config.json",
]
# Bodies that hold nothing that changes between two reads (sync runs and pages are checked for
# their status and content apart).
SAME_BYTES = [r for r in READS if r.startswith(("/api/v1/adapters", "/dist/", "/hf/api/"))]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A PostgreSQL database with the snapshot synced and one hosted adapter published."""
    server = postgres_server()
    if server is None:
        pytest.skip("the fault tests run against PostgreSQL (DATABASE_URL)")
    name = f"{settings.DATABASES['default']['NAME']}_redis_down"
    url = create_database(server, name)
    root = tmp_path_factory.mktemp("redis-down")
    setup = HubProcesses(root / "setup", env={"DATABASE_URL": url})
    setup.env["HUB_DATA_DIR"] = str(root / "hub-data")  # the published files, for every server
    try:
        setup.manage("migrate", "-v0")
        setup.manage("sync_hub", str(make_git_repo(SNAPSHOT, root / "hub-repo")))
        setup.manage("publish_adapter", str(INTEROP / "tiny-bert" / "seq_bn" / "a"),
                     "--task", "sentiment", "--subtask", "sst-2", "--org", "live",
                     "--name", "hosted")  # fmt: skip
        yield url, root
    finally:
        drop_database(server, name)


def _server(database, redis_url: str, name: str) -> HubProcesses:
    url, root = database
    hub = HubProcesses(
        root / name,
        env={
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": name,
            "HUB_DATA_DIR": str(root / "hub-data"),
            "HUB_CACHE_RETRY_SECONDS": str(RETRY),
            "HUB_CACHE_SOCKET_TIMEOUT": "0.5",
            # throttles on, at a rate these reads stay under: they must count, or let through
            "API_THROTTLE_ANON": "100000/min",
            # no process memo: every read goes to Redis, and with Redis down to PostgreSQL
            "HUB_RESPONSE_MEMO_MB": "0",
        },
    )
    hub.start()
    return hub


# A file is read in part: a partial read counts no download, so the counts in the lists stay put.
RANGE = {"Range": "bytes=0-15"}


def _read_all(hub) -> dict[str, tuple[int, bytes]]:
    """Every read's status and body, with this server's own address as `HUB` in the body."""
    answers = {}
    for path in READS:
        status, body = hub.get(path, headers=RANGE if "/resolve/" in path else None)
        answers[path] = status, body.replace(hub.url.encode(), b"HUB")
    return answers


def _assert_every_read_answers(hub, reference: dict[str, tuple[int, bytes]]) -> None:
    for _ in range(3):  # both workers, several times: nothing is cached by either any more
        answers = _read_all(hub)
        for path, (status, body) in answers.items():
            assert status == (206 if "/resolve/" in path else 200), (path, status, body[:300])
        for path in SAME_BYTES:
            assert answers[path][1] == reference[path][1], path
    assert b"sst-2" in answers["/search/?q=sst-2"][1]
    assert b"hosted" in answers["/hf/api/models?author=live"][1]


def _readiness(hub) -> tuple[int, dict]:
    status, body = hub.get_json("/readyz")
    return status, body["checks"]


def test_reads_answer_from_postgresql_when_redis_stops_and_use_it_again_when_back(
    database, tmp_path
):
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    hub = _server(database, redis_server.url, "stops")
    try:
        reference = _read_all(hub)  # rendered and stored in Redis
        assert all(status in (200, 206) for status, _ in reference.values()), reference
        status, checks = _readiness(hub)
        assert status == 200 and checks["cache"] == "ok", checks

        redis_server.stop()
        _assert_every_read_answers(hub, reference)
        status, checks = _readiness(hub)
        assert status == 200 and checks["cache"].startswith("degraded"), checks
        assert checks["database"] == "ok"
        assert hub.get_json("/healthz") == (200, {"status": "ok"})

        redis_server.start()  # the same port, empty
        converge(lambda: _readiness(hub)[1]["cache"] == "ok" or _readiness(hub), RETRY + 5)
        _assert_every_read_answers(hub, reference)
    finally:
        hub.stop()
        redis_server.stop()


def test_reads_answer_from_postgresql_when_redis_was_never_reachable(database):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    hub = _server(database, closed, "never")
    try:
        with HubProcesses(database[1] / "reference", env={"DATABASE_URL": database[0]}) as plain:
            plain.env["HUB_DATA_DIR"] = str(database[1] / "hub-data")
            plain.start()  # the same database without Redis: the bytes to expect
            reference = _read_all(plain)
        _assert_every_read_answers(hub, reference)
        status, checks = _readiness(hub)
        assert status == 200 and checks["cache"].startswith("degraded"), checks
        assert hub.get_json("/healthz") == (200, {"status": "ok"})
    finally:
        hub.stop()
