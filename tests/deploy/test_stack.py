"""The production-style stack without Docker (scripts/stack/ via LocalStack): gunicorn, a Celery
worker and beat on a PostgreSQL database and a Redis number of their own. A catalogue synced by
the worker (signed webhook) and by beat, an adapter pushed with `adapterhub push` and validated
and published by the worker, then every process restarted: the catalogue, the files, the upload
history and the sync history are all still served over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, SNAPSHOT, make_git_repo
from tests.deploy.stack import LocalStack
from tests.uploads.conftest import TINY_BERT

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "deploy-test-webhook-secret"
ORG, TASK, SUBTASK, NAME = "deploytest", "sentiment", "sst-2", "tiny-bert-sst2"
DETAIL = f"/api/v1/adapters/{ORG}/{NAME}/"
# Redis numbers in use elsewhere: 0 CI, 11 the upload worker tests, 13 benchmarks/api.py.
REDIS_DB = 14


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
            # Uploads: validated against the tiny BERT, cards committed to upload/<id> branches.
            "HUB_BASE_MODELS": json.dumps({"tiny-bert": str(TINY_BERT)}),
            "HUB_PUBLISH_REPO": str(repo),
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


def push(stack: LocalStack, tmp_path: Path) -> str:
    """An adapter trained here, pushed with `adapterhub push --wait` and a write token: the
    worker validates and publishes it. Returns the token."""
    from tests.uploads.conftest import save_tiny_adapter

    folder = save_tiny_adapter(tmp_path / "trained", seed=7)
    token = stack.manage("create_token", "alice", "--org", ORG, "--write").stdout.split()[-1]
    push = subprocess.run(
        [stack.python, "-m", "hub_server.cli", "push", str(folder), "--task", TASK,
         "--subtask", SUBTASK, "--org", ORG, "--name", NAME, "--version", "1", "--wait"],
        cwd=ROOT,
        env={**os.environ, "ADAPTERHUB_URL": stack.url, "ADAPTERHUB_TOKEN": token,
             "XDG_CONFIG_HOME": str(tmp_path / "config")},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert push.returncode == 0, f"{push.stdout}\n{push.stderr}\n{stack.logs()}"
    assert "status: published" in push.stdout, push.stdout
    return token


def without_counts(value):
    """A response body without download counters (they count our own downloads)."""
    if isinstance(value, dict):
        return {k: without_counts(v) for k, v in value.items() if k != "downloads"}
    if isinstance(value, list):
        return [without_counts(v) for v in value]
    return value


def observe(stack: LocalStack, token: str) -> dict:
    """What must survive a restart, as seen over HTTP."""
    detail = get(stack, DETAIL).json()
    (version,) = detail["versions"]
    archive = get(stack, f"{DETAIL}versions/1/download")
    uploads = get(stack, "/api/v1/uploads/", headers={"Authorization": f"Bearer {token}"}).json()
    return {
        "adapters": get(stack, "/api/v1/adapters/?page_size=100").json()["count"],
        "tasks": without_counts(get(stack, "/api/v1/tasks/").json()),
        "architectures": without_counts(get(stack, "/api/v1/architectures/").json()),
        "legacy_index": get(stack, "/dist/v2/index/bert-base-uncased.json").json(),
        "detail": without_counts(detail),
        "archive_sha256": hashlib.sha256(archive.content).hexdigest(),
        "version_sha256": version["sha256"],
        "etag": archive.headers["ETag"],
        "uploads": uploads.get("results", uploads) if isinstance(uploads, dict) else uploads,
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
    # Both web workers hold the list in memory at the sync's generation...
    listed = f"/api/v1/adapters/?org={ORG}"
    assert {get(stack, listed).json()["count"] for _ in range(10)} == {0}
    token = push(stack, tmp_path)
    # ...and the worker's publish reaches both of them before the next read: none serves the
    # page it held.
    assert {get(stack, listed).json()["count"] for _ in range(10)} == {1}
    before = observe(stack, token)
    (upload,) = before["uploads"]
    assert upload["status"] == "published" and upload["adapter"]["name"] == NAME
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

    after = observe(stack, token)
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
