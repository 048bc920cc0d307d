"""The production-style stack without Docker (scripts/stack/ via LocalStack): gunicorn, a Celery
worker and beat on a PostgreSQL database and a Redis number of their own. A catalogue synced by
the worker (signed webhook) and by beat, an adapter published with its files, then every process
restarted: the catalogue, the files and the history are all still served over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import SNAPSHOT, make_git_repo
from tests.deploy.stack import LocalStack

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "deploy-test-webhook-secret"
ORG, TASK, SUBTASK = "deploytest", "sentiment", "sst-2"
REDIS_DB = 11


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stack(tmp_path):
    repo = make_git_repo(SNAPSHOT, tmp_path / "hub-repo")
    stack = LocalStack(
        tmp_path / "stack",
        port=free_port(),
        db_name=f"adapterhub_deploy_{os.getpid()}",
        redis_db=REDIS_DB,
        env={
            "HUB_REPO_URL": str(repo),
            "HUB_REPO_BRANCH": "main",
            "HUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            # Short, so that beat's own sync shows up within the test.
            "HUB_SYNC_INTERVAL_SECONDS": "8",
        },
    )
    stack.create_database()
    stack.flush_redis()
    try:
        yield stack
    finally:
        stack.stop()
        stack.drop_database()
        stack.flush_redis()


def get(stack: LocalStack, path: str, **kwargs) -> requests.Response:
    response = requests.get(stack.url + path, timeout=30, **kwargs)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response


def sync_runs(stack: LocalStack) -> list[dict]:
    return get(stack, "/api/v1/sync/runs/?page_size=1000").json()["results"]


def signed_sync(stack: LocalStack) -> requests.Response:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = requests.post(
        stack.url + "/api/v1/sync/",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={signature}",
        },
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response


def wait_for(condition, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def publish(stack: LocalStack, tmp_path: Path) -> str:
    # TODO(lead): once the upload workflow lands (hub_server/uploads/services.py and
    # `adapterhub push`), publish through POST /api/v1/uploads/ with a token from
    # `manage.py create_token`, wait for status `published`, and also compare
    # GET /api/v1/uploads/{id}/ before and after the restart (the upload history).
    from tests.hosting.conftest import make_adapter_folder

    folder = make_adapter_folder(tmp_path / "adapter", seed=7)
    out = stack.manage(
        "publish_adapter",
        str(folder),
        "--task",
        TASK,
        "--subtask",
        SUBTASK,
        "--org",
        ORG,
        "--name",
        "tiny-bert-sst2",
        "--version",
        "1",
    ).stdout
    assert "published @deploytest/tiny-bert-sst2 version 1" in out, out
    return "/api/v1/adapters/deploytest/tiny-bert-sst2/"


def without_counts(value):
    """A response body without download counters (they count our own downloads)."""
    if isinstance(value, dict):
        return {k: without_counts(v) for k, v in value.items() if k != "downloads"}
    if isinstance(value, list):
        return [without_counts(v) for v in value]
    return value


def observe(stack: LocalStack, detail_path: str) -> dict:
    """What must survive a restart, as seen over HTTP."""
    detail = get(stack, detail_path).json()
    (version,) = detail["versions"]
    archive = get(stack, f"{detail_path}versions/1/download")
    return {
        "adapters": get(stack, "/api/v1/adapters/?page_size=100").json()["count"],
        "tasks": without_counts(get(stack, "/api/v1/tasks/").json()),
        "architectures": without_counts(get(stack, "/api/v1/architectures/").json()),
        "legacy_index": get(stack, "/dist/v2/index/bert-base-uncased.json").json(),
        "detail": without_counts(detail),
        "archive_sha256": hashlib.sha256(archive.content).hexdigest(),
        "version_sha256": version["sha256"],
        "etag": archive.headers["ETag"],
        "runs": {run["id"]: (run["status"], run["commit"]) for run in sync_runs(stack)},
    }


def test_stack_keeps_catalogue_files_and_history_across_restart(stack, tmp_path):
    stack.start()
    stack.wait_ready()

    # The worker syncs the snapshot when the signed push webhook arrives.
    signed_sync(stack)
    wait_for(
        lambda: any(r["status"] == "succeeded" and r["added"] for r in sync_runs(stack)),
        "the webhook's sync",
    )
    detail_path = publish(stack, tmp_path)
    before = observe(stack, detail_path)
    assert before["adapters"] > 250
    assert before["archive_sha256"] == before["version_sha256"]
    assert before["etag"] == f'"{before["version_sha256"]}"'
    stored = list((stack.data_dir / "hub-data" / "files").rglob("*"))
    assert any(path.is_file() for path in stored)

    pids = stack.pids()
    stack.restart()
    stack.wait_ready()
    restarted = stack.pids()
    for role in ("web", "worker", "beat"):
        assert restarted[role] is not None and restarted[role] != pids[role], role

    after = observe(stack, detail_path)
    runs_before = before.pop("runs")
    runs_after = after.pop("runs")
    assert after == before
    # The history is intact (beat may have added no-op runs since).
    assert {k: runs_after[k] for k in runs_before} == runs_before

    # The restarted worker takes tasks: a signed push queues a sync that it runs...
    signed_sync(stack)
    wait_for(lambda: len(sync_runs(stack)) > len(runs_after), "a sync after the restart")
    # ...and the restarted beat sends its periodic sync (every 8 s here) on its own.
    seen = len(sync_runs(stack))
    wait_for(lambda: len(sync_runs(stack)) > seen, "beat's periodic sync", timeout=60)
