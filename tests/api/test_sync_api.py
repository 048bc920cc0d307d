"""POST /api/v1/sync/ (staff or a signed push webhook) and GET /api/v1/sync/runs/."""

import base64
import hashlib
import hmac
import json

import pytest
from django.contrib.auth.models import User

from hub_server.api import webhooks
from hub_server.api.webhooks import QueuedSync, signature_is_valid
from hub_server.catalog.models import SyncRun

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

SYNC = "/api/v1/sync/"
SECRET = "s3cret-webhook"
PUSH = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def basic(username: str, password: str = "pw") -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def queued(monkeypatch, settings):
    """Record sync requests instead of running them."""
    settings.HUB_WEBHOOK_SECRET = SECRET
    settings.HUB_REPO_BRANCH = "main"
    calls = []

    def fake_queue(full=False):
        calls.append(full)
        return QueuedSync(task_id="task-1", run_id=None)

    monkeypatch.setattr("hub_server.api.views.queue_hub_sync", fake_queue)
    return calls


def post(client, body: bytes = PUSH, **headers):
    return client.post(SYNC, data=body, content_type="application/json", headers=headers)


def test_signature_check():
    assert signature_is_valid(PUSH, sign(PUSH), SECRET)
    assert not signature_is_valid(PUSH, sign(PUSH, "other"), SECRET)
    assert not signature_is_valid(PUSH + b" ", sign(PUSH), SECRET)
    assert not signature_is_valid(PUSH, sign(PUSH).removeprefix("sha256="), SECRET)
    assert not signature_is_valid(PUSH, sign(PUSH, ""), "")


def test_valid_signature_queues_a_sync(client, queued):
    response = post(client, **{"X-Hub-Signature-256": sign(PUSH), "X-GitHub-Event": "push"})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["task_id"] == "task-1" and body["runs_url"].endswith("/api/v1/sync/runs/")
    assert queued == [False]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": sign(PUSH, "wrong-secret")},
        {"X-Hub-Signature-256": sign(PUSH + b"tampered")},
        {"X-Hub-Signature-256": "md5=abc"},
    ],
)
def test_missing_or_invalid_signature_is_a_json_403(client, queued, headers):
    response = post(client, **headers)
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]
    assert queued == []


def test_signed_webhooks_are_off_without_a_secret(client, queued, settings, monkeypatch):
    settings.HUB_WEBHOOK_SECRET = ""
    monkeypatch.delenv("HUB_WEBHOOK_SECRET", raising=False)
    response = post(client, **{"X-Hub-Signature-256": sign(PUSH, "")})
    assert response.status_code == 403 and "HUB_WEBHOOK_SECRET" in response.json()["detail"]
    assert queued == []


def test_ping_and_pushes_to_other_branches_are_acknowledged_without_a_sync(client, queued):
    ping = post(client, **{"X-Hub-Signature-256": sign(PUSH), "X-GitHub-Event": "ping"})
    assert ping.status_code == 200 and "pong" in ping.json()["detail"]
    other = json.dumps({"ref": "refs/heads/feature"}).encode()
    response = post(client, other, **{"X-Hub-Signature-256": sign(other)})
    assert response.status_code == 200 and "ignored" in response.json()["detail"]
    assert queued == []


def test_non_staff_user_is_403_and_staff_may_ask_for_a_full_sync(client, queued):
    User.objects.create_user("alice", password="pw")
    User.objects.create_user("root", password="pw", is_staff=True)
    response = post(client, b"{}", Authorization=basic("alice"))
    assert response.status_code == 403
    response = post(client, b'{"full": true}', Authorization=basic("root"))
    assert response.status_code == 202
    assert queued == [True]
    response = post(client, b'{"full": "perhaps"}', Authorization=basic("root"))
    assert response.status_code == 400 and "full" in response.json()["errors"]


@pytest.mark.parametrize("username,password", [("ro\x00ot", "pw"), ("root", "p\x00w")])
def test_basic_credentials_with_a_nul_are_a_401_not_a_500(client, queued, username, password):
    User.objects.create_user("root", password="pw", is_staff=True)
    response = post(client, b"{}", Authorization=basic(username, password))
    assert response.status_code == 401 and response.json()["detail"]
    assert queued == []


def test_staff_session_login_queues_a_sync(client, queued):
    staff = User.objects.create_user("root", password="pw", is_staff=True)
    client.force_login(staff)
    assert post(client, b"{}").status_code == 202
    assert queued == [False]


def test_staff_api_token_with_write_scope_queues_a_sync(client, queued):
    from hub_server.accounts.services import create_token

    staff = User.objects.create_user("root", password="pw", is_staff=True)
    _, read_secret = create_token(staff, scope="read")
    _, write_secret = create_token(staff, scope="write")
    response = post(client, b"{}", Authorization=f"Bearer {read_secret}")
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert post(client, b"{}", Authorization=f"Bearer {write_secret}").status_code == 202
    assert post(client, b"{}", Authorization="Bearer ahub_nonsense").status_code == 401
    assert queued == [False]


def test_eager_sync_runs_and_reports_its_run(client, settings, catalog):
    """No broker: the queued task runs in the request, and the answer names the finished run."""
    settings.HUB_WEBHOOK_SECRET = SECRET
    settings.HUB_REPO_URL = str(catalog)
    settings.HUB_REPO_BRANCH = "main"
    response = post(client, **{"X-Hub-Signature-256": sign(PUSH)})
    assert response.status_code == 202, response.content
    run = SyncRun.objects.get(pk=response.json()["run_id"])
    assert run.status == SyncRun.Status.SUCCEEDED and run.errors == []
    assert run.added == 0 and run.removed == 0


def test_sync_runs_are_public_and_paginated(client):
    body = client.get("/api/v1/sync/runs/").json()
    assert body["count"] == 1
    (run,) = body["results"]
    assert run["status"] == "succeeded"
    assert run["counts"]["adapter"]["added"] == 291 and run["errors"] == []
    assert run["commit"] and run["duration_ms"] is not None


def test_sync_runs_show_per_file_errors_and_hide_credentials(client):
    SyncRun.objects.create(
        source="https://bot:ghp_token@github.com/adapter-hub/Hub.git",
        status=SyncRun.Status.SUCCEEDED,
        errors=[{"file": "adapters/x/y.yaml", "line": 3, "field": "type", "message": "bad"}],
    )
    run = client.get("/api/v1/sync/runs/").json()["results"][0]
    assert run["source"] == "https://github.com/adapter-hub/Hub.git"
    assert run["errors"] == [
        {"file": "adapters/x/y.yaml", "line": 3, "field": "type", "message": "bad"}
    ]


def test_sync_get_is_not_allowed_as_json(client):
    response = client.get(SYNC)
    assert response.status_code in (403, 405)
    assert response["Content-Type"] == "application/json"


def test_queue_service_reports_eager_runs(monkeypatch, settings):
    class Result:
        id = "abc"
        result = 42

    monkeypatch.setattr("hub_server.catalog.tasks.sync_hub_task.delay", lambda **kwargs: Result())
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert webhooks.queue_hub_sync() == QueuedSync("abc", 42)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert webhooks.queue_hub_sync() == QueuedSync("abc", None)
