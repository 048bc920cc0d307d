"""A real Celery worker process for the end-to-end tests: Redis broker, a queue of its own, the
pytest-django test database, the test's data and file dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from hub_server.uploads import basemodel_cache
from tests.conftest import ROOT

BROKER_URL = os.environ.get("HUB_TEST_BROKER_URL", "redis://127.0.0.1:6379/11")


class Worker:
    def __init__(self, tmp_path: Path, extra_env: dict[str, str] | None = None, pool: str = "solo"):
        self.pool = pool
        self.queue = f"uploads-test-{uuid.uuid4().hex[:12]}"
        self.log = tmp_path / f"worker-{self.queue}.log"
        db = connection.settings_dict
        database_url = (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        )
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DB_CONN_MAX_AGE": "0",
            "CELERY_BROKER_URL": BROKER_URL,
            "HUB_DATA_DIR": str(settings.HUB_DATA_DIR),
            "HUB_FILES_DIR": str(settings.STORAGES["adapter_files"]["OPTIONS"]["location"]),
            "HUB_BASE_MODELS": json.dumps(settings.HUB_BASE_MODELS),
            "HUB_BASE_MODEL_ENDPOINT": settings.HUB_BASE_MODEL_ENDPOINT,
            "HUB_BASE_MODEL_ALLOW": ",".join(settings.HUB_BASE_MODEL_ALLOW),
            "HUB_BASE_MODEL_CACHE_DIR": str(basemodel_cache.cache_dir()),
            "HUB_BASE_MODEL_CACHE_MAX_BYTES": str(settings.HUB_BASE_MODEL_CACHE_MAX_BYTES),
            "HUB_PUBLIC_URL": "",
            "HUB_PUBLISH_REPO": settings.HUB_PUBLISH_REPO,
            "HUB_PUBLISH_BRANCH": settings.HUB_PUBLISH_BRANCH,
            "PYTHONPATH": str(ROOT),
            # What the worker itself sends (the sweep at its start) goes to its own queue.
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Worker:
        cmd = [
            str(ROOT / ".venv" / "bin" / "celery"), "-A", "hub_server", "worker", "-P", self.pool,
            *(["-c", "1"] if self.pool == "prefork" else []), "-Q", self.queue, "-l", "info", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-n", f"{self.queue}-{time.monotonic_ns()}@%h",
        ]  # fmt: skip
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.output()}")
            if b" ready." in self.log.read_bytes()[offset:]:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def kill_mid_validation(self, upload_id: int, timeout: float = 60) -> None:
        """SIGKILL this worker once it validates the upload, inside the load check's delay
        (HUB_VALIDATION_TEST_DELAY)."""
        from hub_server.uploads.models import Upload

        deadline = time.monotonic() + timeout
        while Upload.objects.get(pk=upload_id).status != "validating":
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.1)
        time.sleep(1.0)
        self.kill()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def flush(self) -> None:
        """Remove this run's queue (and its unacked bookkeeping) from Redis."""
        client = redis.Redis.from_url(BROKER_URL)
        client.delete(self.queue)
        for key in client.scan_iter("_kombu.binding.*"):
            client.srem(
                key, *[m for m in client.smembers(key) if self.queue.encode() in m] or [b""]
            )


def use_broker(queue: str, broker_url: str = BROKER_URL):
    """Point this process's Celery app (the live server's producer) at Redis and the queue."""
    from hub_server.celery import app

    saved = {k: app.conf.get(k) for k in ("broker_url", "task_always_eager", "task_default_queue")}
    app.conf.update(broker_url=broker_url, task_always_eager=False, task_default_queue=queue)
    _forget_connections(app)
    return saved


def _forget_connections(app) -> None:
    # An eager task earlier in the process made Celery cache a producer pool for the broker it had
    # then (none): drop it, and the routing built for the old default queue.
    app._pool = None
    app.__dict__.pop("amqp", None)


def restore_broker(saved: dict) -> None:
    from hub_server.celery import app

    app.conf.update(saved)
    _forget_connections(app)


@pytest.fixture(autouse=True, scope="module")
def close_other_sessions(django_db_blocker):
    """Request threads of a live server and lease threads keep connections to the test database;
    end them so that the test database can be dropped at the end of the run (import this fixture
    into a test module to use it)."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
