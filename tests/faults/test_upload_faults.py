"""Uploads under faults: the broker (Redis) down while an upload arrives, a worker SIGKILLed
mid-validation, and two workers claiming the same upload at once.

Redis here is a private redis-server on a port of its own (tests/faults/private_redis.py), stopped
and started by the test; the workers and beat are real Celery processes (tests/uploads/worker.py).
"""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from hub_server import storage
from hub_server.accounts import services as accounts
from hub_server.catalog.demo import load_demo_catalogue
from hub_server.uploads import claims, services
from hub_server.uploads.models import Upload
from tests.conftest import ROOT
from tests.uploads.conftest import save_tiny_adapter, upload_settings, zip_folder  # noqa: F401
from tests.uploads.worker import (  # noqa: F401
    Worker,
    close_other_sessions,
    restore_broker,
    use_broker,
)

from .private_redis import private_redis  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lab(db):
    load_demo_catalogue()
    user = User.objects.create(username="bob")
    accounts.create_organisation("lab", owner=user)
    return user


@pytest.fixture(scope="module")
def adapter_zip(tmp_path_factory) -> bytes:
    return zip_folder(save_tiny_adapter(tmp_path_factory.mktemp("adapter") / "trained"))


def post_upload(client: APIClient, data: bytes, **fields):
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = {
        "archive": SimpleUploadedFile("adapter.zip", data),
        "task": "sentiment",
        "subtask": "demo-reviews",
        "org": "lab",
        **fields,
    }
    return client.post("/api/v1/uploads/", body, format="multipart")


def token_client(user) -> APIClient:
    _, secret = accounts.create_token(user, scope="write")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def wait_final(upload_id: int, timeout: float, *logs) -> Upload:
    deadline = time.monotonic() + timeout
    while not (upload := Upload.objects.get(pk=upload_id)).is_final:
        assert time.monotonic() < deadline, "\n".join(log() for log in logs)
        time.sleep(0.2)
    return upload


class Beat:
    """celery beat with the test's broker and queue, sweeping every HUB_UPLOAD_SWEEP_SECONDS."""

    def __init__(self, worker: Worker, tmp_path):
        self.env = worker.env
        self.log = tmp_path / "beat.log"
        self.schedule = tmp_path / "beat-schedule"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Beat:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "celery"), "-A", "hub_server", "beat", "-l", "info",
                 "-s", str(self.schedule), "--pidfile="],
                cwd=ROOT, env=self.env, stdout=out, stderr=out,
            )  # fmt: skip
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def broker(private_redis, tmp_path):  # noqa: F811
    """A worker factory on the private Redis; this process sends to the worker's queue."""
    made: list = []
    saved = None

    def worker(**env) -> Worker:
        nonlocal saved
        w = Worker(tmp_path, {"CELERY_BROKER_URL": private_redis.url, **env})
        if made:
            w.queue, w.env = made[0].queue, {**made[0].env, **env}
        saved = saved or use_broker(w.queue, private_redis.url)
        made.append(w)
        return w

    worker.redis = private_redis
    yield worker
    for w in made:
        w.stop()
    if saved:
        restore_broker(saved)


@pytest.mark.slow
def test_redis_down_upload_is_stored_answered_202_delayed_and_validated_when_back(
    lab, broker, adapter_zip, tmp_path
):
    client = token_client(lab)
    redis = broker.redis
    worker = broker(HUB_UPLOAD_SWEEP_SECONDS="2")
    redis.stop()

    started = time.monotonic()
    response = post_upload(client, adapter_zip)
    answered_in = time.monotonic() - started
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending" and body["validation_delayed"] is True
    assert body["message"].startswith("validation delayed"), body["message"]
    assert answered_in < 10, f"the request waited {answered_in:.1f}s for the dead broker"
    upload = Upload.objects.get(pk=body["id"])
    assert storage.blob_exists(upload.archive_key) and upload.queued_at is None
    # the status, in the API and on the contributor's page
    status = client.get(f"/api/v1/uploads/{upload.pk}/").json()
    assert status["validation_delayed"] is True and "validation delayed" in status["message"]
    page = APIClient()
    page.force_login(lab)
    assert b"validation delayed" in page.get(f"/uploads/{upload.pk}/").content

    # Redis back: a worker starting sends what was delayed, no sweep needed
    redis.start()
    worker.start()
    published = wait_final(upload.pk, 90, worker.output)
    assert published.status == "published" and published.attempts == 1, published.message
    assert published.message.startswith("published")

    # Redis down again, under a running worker: beat's sweep sends the delayed upload within
    # HUB_UPLOAD_SWEEP_SECONDS of Redis being back (the worker reconnects by itself)
    second = zip_folder(save_tiny_adapter(tmp_path / "second", seed=1))
    redis.stop()
    response = post_upload(client, second, name=published.name)  # its version 2
    assert response.status_code == 202 and response.json()["validation_delayed"] is True
    second_id = response.json()["id"]
    beat = Beat(worker, tmp_path)
    try:
        redis.start()
        back = time.monotonic()
        beat.start()
        done = wait_final(second_id, 90, worker.output, beat.output)
        took = time.monotonic() - back
    finally:
        beat.stop()
    assert done.status == "published" and done.attempts == 1, done.message
    print(f"delayed upload published {took:.1f}s after Redis was back (sweep every 2 s)")


@pytest.mark.slow
def test_worker_killed_mid_validation_is_validated_again_exactly_once(lab, broker, adapter_zip):
    # The broker would redeliver the unacknowledged task only after an hour: the claim's lease
    # (3 s here) and the sweep at the next worker's start are what bring the upload back.
    env = {
        "HUB_VALIDATION_TEST_DELAY": "4",
        "HUB_VALIDATION_LEASE_SECONDS": "3",
        "HUB_BROKER_VISIBILITY_TIMEOUT": "3600",
    }
    first = broker(**env).start()
    response = post_upload(token_client(lab), adapter_zip)
    assert response.status_code == 202, response.content
    upload_id = response.json()["id"]
    first.kill_mid_validation(upload_id)
    held = Upload.objects.get(pk=upload_id)
    assert held.status == "validating" and held.attempts == 1
    # nobody may take it while the dead worker's lease runs
    assert claims.claim_upload(upload_id) is None
    deadline = time.monotonic() + 15
    while Upload.objects.filter(pk=upload_id, lease_expires_at__gt=timezone.now()).exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)

    second = broker(**env).start()
    done = wait_final(upload_id, 90, second.output)
    assert done.status == "published", done.report
    # exactly one more validation: every run is one claim, and every claim one attempt
    assert done.attempts == 2
    assert [entry["name"] for entry in done.report].count("publish") == 1
    time.sleep(2)  # a late duplicate delivery would show now
    assert Upload.objects.get(pk=upload_id).attempts == 2


# -- claims, without workers ----------------------------------------------------------------------


def stored_upload(user, data: bytes, **fields) -> Upload:
    """An upload stored and pending, its task not sent."""
    import io
    from unittest import mock

    with mock.patch.object(services, "queue_validation"):
        return services.create_upload(
            user=user, archive=io.BytesIO(data), task="sentiment", subtask="demo-reviews",
            org="lab", **fields,
        )  # fmt: skip


def test_a_validating_upload_cannot_be_claimed_again_until_its_lease_expires(lab, adapter_zip):
    up = stored_upload(lab, adapter_zip)
    first = claims.claim_upload(up.pk)
    assert first is not None and first.attempts == 1 and first.status == "validating"
    assert claims.claim_upload(up.pk) is None, "a second claim of a validating upload succeeded"
    # the first worker died: its lease runs out, then another worker may take the upload
    Upload.objects.filter(pk=up.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    second = claims.claim_upload(up.pk)
    assert second is not None and second.attempts == 2
    # the first worker, back from a stall, can neither publish nor finish over the second
    with pytest.raises(claims.ClaimLost):
        claims.finish(first, "rejected", [], "stale result")
    with pytest.raises(claims.ClaimLost), transaction.atomic():
        claims.hold_claim(first)
    assert claims.finish(second, "rejected", [], "the holder's result").message == (
        "the holder's result"
    )
    assert claims.claim_upload(up.pk) is None  # final


def test_a_worker_that_lost_its_claim_publishes_nothing(lab, adapter_zip, settings, tmp_path):
    from unittest import mock

    from hub_server.catalog.demo import prepare_demo_repository
    from hub_server.catalog.models import Adapter
    from hub_server.uploads import checks, hubrepo
    from tests.conftest import git, make_git_repo

    settings.HUB_PUBLISH_REPO = str(make_git_repo(prepare_demo_repository(), tmp_path / "export"))
    up = stored_upload(lab, adapter_zip)
    run_checks = checks.run_checks

    def stalled_past_the_lease(validation):
        result = run_checks(validation)
        # meanwhile the lease ran out and another worker took the upload
        Upload.objects.filter(pk=up.pk).update(lease_expires_at=timezone.now())
        assert claims.claim_upload(up.pk) is not None
        return result

    with mock.patch.object(checks, "run_checks", stalled_past_the_lease):
        result = services.validate_upload(up.pk)
    assert result.status == "validating" and result.attempts == 2
    assert not Adapter.objects.filter(org="lab").exists()
    commits = git(hubrepo.publish_repository(), "log", "--all", "--format=%s")
    assert f"(upload {up.pk})" not in commits


def test_two_concurrent_claims_of_one_upload_one_wins(lab, adapter_zip):
    from django.db import connection

    ups = [stored_upload(lab, adapter_zip) for _ in range(5)]
    for up in ups:
        barrier = threading.Barrier(2)
        results = []

        def claim(upload_id=up.pk, barrier=barrier, results=results):
            try:
                barrier.wait()
                results.append(claims.claim_upload(upload_id))
            finally:
                connection.close()

        threads = [threading.Thread(target=claim) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [r for r in results if r is not None]
        assert len(won) == 1, f"{len(won)} workers claimed upload {up.pk} at once"
        assert Upload.objects.get(pk=up.pk).attempts == 1


def test_the_lease_is_renewed_while_the_validation_runs(lab, adapter_zip, settings):
    settings.HUB_VALIDATION_LEASE_SECONDS = 3
    up = stored_upload(lab, adapter_zip)
    claimed = claims.claim_upload(up.pk)
    first_end = Upload.objects.get(pk=up.pk).lease_expires_at
    with claims.leased(claimed):
        time.sleep(2.5)  # past one renewal (every second)
        renewed = Upload.objects.get(pk=up.pk).lease_expires_at
    assert renewed > first_end + timedelta(seconds=0.5)
    assert claims.claim_upload(up.pk) is None


def test_the_sweep_sends_delayed_expired_and_lost_uploads_only(lab, adapter_zip, settings):
    from unittest import mock

    from hub_server.uploads import dispatch

    old = timezone.now() - timedelta(minutes=1)
    delayed = stored_upload(lab, adapter_zip)  # never sent
    fresh = stored_upload(lab, adapter_zip)  # its send may be in flight
    expired = stored_upload(lab, adapter_zip)
    held = stored_upload(lab, adapter_zip)
    queued = stored_upload(lab, adapter_zip)  # sent a minute ago, waiting in the queue
    Upload.objects.filter(pk__in=[delayed.pk, expired.pk, held.pk, queued.pk]).update(
        created_at=old
    )
    Upload.objects.filter(pk=queued.pk).update(queued_at=old)
    claims.claim_upload(expired.pk)
    Upload.objects.filter(pk=expired.pk).update(lease_expires_at=old)
    claims.claim_upload(held.pk)
    with mock.patch.object(dispatch, "send_validation", return_value=True) as send:
        assert dispatch.requeue_stuck_uploads() == [delayed.pk, expired.pk]
        assert send.call_count == 2
        # a pending upload sent longer ago than the time limit lost its message
        assert dispatch.requeue_stuck_uploads(lost_after=timedelta(seconds=30)) == [
            delayed.pk,
            expired.pk,
            queued.pk,
        ]
    assert fresh.pk not in [c.args[0] for c in send.call_args_list]
    # and the broker still down: the first failed send ends the sweep, the upload stays delayed
    from hub_server.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        with mock.patch(
            "hub_server.uploads.tasks.validate_upload_task.delay", side_effect=OSError("down")
        ) as send:
            assert dispatch.requeue_stuck_uploads() == []
        assert send.call_count == 1
    finally:
        app.conf.task_always_eager = eager
    assert Upload.objects.get(pk=delayed.pk).validation_delayed
