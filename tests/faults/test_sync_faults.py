"""A sync under faults: a remote that hangs or is not there, a database session that dies, a sync
process killed midway. Each fails cleanly, writes nothing half, and the next sync completes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings
from django.db import connection, transaction

from hub_server.catalog.gitsource import clone_dir_for
from hub_server.catalog.models import Adapter, SyncLock, SyncRun
from hub_server.catalog.sync import sync_hub_repository
from hub_server.catalog.sync_runs import REAPED, reap_stale_runs
from tests.catalog.minihub import MiniHub, card_doc, catalogue_dump
from tests.conftest import ROOT, git

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="database faults are PostgreSQL's (CI runs these on PostgreSQL)",
    ),
]


class HangingRemote:
    """A git:// server that accepts connections and never answers."""

    def __init__(self, scheme: str = "git"):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"{scheme}://127.0.0.1:{self.server.getsockname()[1]}/hub.git"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self):
        self.server.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def hub(tmp_path) -> MiniHub:
    hub = MiniHub(tmp_path / "hub")
    hub.write("adapters/ukp/a.yaml", card_doc())
    hub.commit("a card")
    return hub


@pytest.fixture(params=["git", "http"])
def hanging(request):
    # Over http git hands the connection to a helper process (git-remote-http): the timeout must
    # kill it too, or its open pipe keeps the sync waiting.
    remote = HangingRemote(request.param)
    yield remote
    remote.close()


def lock_is_free() -> bool:
    """Whether another session can take the sync lock right now."""
    params = connection.settings_dict
    conn = psycopg2.connect(dbname=params["NAME"], user=params["USER"], host=params["HOST"],
                            port=params["PORT"] or 5432, password=params["PASSWORD"] or None)  # fmt: skip
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '100ms'")
            try:
                cur.execute("SELECT id FROM catalog_synclock WHERE id = 1 FOR UPDATE NOWAIT")
                return cur.fetchone() is not None
            except psycopg2.errors.LockNotAvailable:
                return False
    finally:
        conn.rollback()
        conn.close()


def in_thread(target):
    result = {}

    def run():
        try:
            result["value"] = target()
        finally:
            from django.db import connections

            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_hanging_remote_times_out_without_holding_the_lock(hub, hanging, settings, client):
    assert sync_hub_repository(str(hub.path)).status == SyncRun.Status.SUCCEEDED
    before = catalogue_dump()
    SyncLock.objects.get_or_create(id=1)
    settings.HUB_SYNC_FETCH_TIMEOUT_SECONDS = 3
    started = time.monotonic()

    thread, result = in_thread(lambda: sync_hub_repository(hanging.url))
    deadline = time.monotonic() + 10
    while not hanging.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hanging.connections, "git never reached the remote"
    # While git waits on the remote: no lock held, reads answer with the catalogue as it was.
    assert lock_is_free()
    assert client.get("/api/v1/adapters/").status_code == 200
    assert Adapter.objects.filter(status=Adapter.Status.ACTIVE).count() == 1
    thread.join(30)

    run = result["value"]
    assert run.status == SyncRun.Status.FAILED
    assert "no answer within 3 s" in run.message and hanging.url in run.message
    assert time.monotonic() - started < 3 + 8
    assert catalogue_dump() == before


def test_fetch_of_an_existing_clone_times_out_too(hub, hanging, settings):
    assert sync_hub_repository(str(hub.path)).status == SyncRun.Status.SUCCEEDED
    clone = clone_dir_for(str(hub.path), Path(settings.HUB_DATA_DIR))
    git(clone, "config", "remote.origin.url", hanging.url)
    settings.HUB_SYNC_FETCH_TIMEOUT_SECONDS = 2
    started = time.monotonic()

    run = sync_hub_repository(str(hub.path))

    assert run.status == SyncRun.Status.FAILED
    assert "no answer within 2 s" in run.message
    assert time.monotonic() - started < 2 + 8
    assert Adapter.objects.filter(status=Adapter.Status.ACTIVE).count() == 1


def test_unreachable_remote_fails_at_once_with_a_clear_error(hub):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    started = time.monotonic()

    run = sync_hub_repository(f"git://127.0.0.1:{port}/hub.git")

    assert run.status == SyncRun.Status.FAILED
    assert run.message.startswith(f"cannot fetch git://127.0.0.1:{port}/hub.git: ")
    assert time.monotonic() - started < 5


def terminate_own_session_at(stage: str):
    """A progress callback that ends this process's database session when the sync says `stage`."""

    def terminate(message):
        if message.startswith(stage):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid = cursor.fetchone()[0]
            params = connection.settings_dict
            killer = psycopg2.connect(dbname=params["NAME"], user=params["USER"],
                                      host=params["HOST"])  # fmt: skip
            killer.autocommit = True
            with killer.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            killer.close()

    return terminate


# "fetching": the session dies while idle, before the transaction (a restart during the fetch);
# "reading": inside the transaction, after the lock.
@pytest.mark.parametrize("stage", ["fetching", "reading"])
def test_database_session_killed_mid_sync_writes_nothing_and_the_next_completes(hub, stage):
    assert sync_hub_repository(str(hub.path)).status == SyncRun.Status.SUCCEEDED
    before = catalogue_dump()
    hub.write("adapters/ukp/b.yaml", card_doc(model_name="roberta-base"))
    hub.write("adapters/ukp/a.yaml", card_doc(description="edited"))
    hub.commit("two changes")

    run = sync_hub_repository(str(hub.path), progress=terminate_own_session_at(stage))

    assert run.status == SyncRun.Status.FAILED
    assert "database connection failed" in run.message and "nothing was written" in run.message
    run.refresh_from_db()
    assert run.status == SyncRun.Status.FAILED  # recorded, not left `running`
    assert catalogue_dump() == before
    again = sync_hub_repository(str(hub.path))
    assert again.status == SyncRun.Status.SUCCEEDED, again.message
    assert Adapter.objects.get(name="a").description == "edited"
    assert Adapter.objects.get(name="b").status == Adapter.Status.ACTIVE


KILLABLE_SYNC = """
import sys, time, pathlib, django
django.setup()
from hub_server.catalog.sync import sync_hub_repository

def progress(message):
    if message.startswith("reading"):
        pathlib.Path(sys.argv[2]).write_text("writing")
        time.sleep(120)

sync_hub_repository(sys.argv[1], progress=progress)
"""


def test_sync_process_killed_midway_is_marked_failed_by_the_next_sync(hub, tmp_path):
    params = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hub_server.settings",
        "DATABASE_URL": f"postgres://{params['USER']}@{params['HOST']}:{params['PORT'] or 5432}"
        f"/{params['NAME']}",
        "HUB_DATA_DIR": str(settings.HUB_DATA_DIR),
    }
    marker = tmp_path / "in-transaction"
    SyncLock.objects.get_or_create(id=1)
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_SYNC, str(hub.path), str(marker)],
                            cwd=ROOT, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), "the sync subprocess never reached its transaction"
        assert not lock_is_free()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    (killed,) = SyncRun.objects.all()
    assert killed.status == SyncRun.Status.RUNNING

    deadline = time.monotonic() + 10
    while not lock_is_free() and time.monotonic() < deadline:
        time.sleep(0.1)  # PostgreSQL ends the dead client's session and rolls it back
    run = sync_hub_repository(str(hub.path))

    killed.refresh_from_db()
    assert killed.status == SyncRun.Status.FAILED
    assert killed.message == REAPED and killed.finished_at is not None
    assert run.status == SyncRun.Status.SUCCEEDED, run.message
    assert Adapter.objects.filter(status=Adapter.Status.ACTIVE).count() == 1


def test_a_run_of_another_host_is_reaped_once_its_database_session_is_gone():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, backend_start FROM pg_stat_activity "
                       "WHERE pid = pg_backend_pid()")  # fmt: skip
        pid, started = cursor.fetchone()
    elsewhere = {"host": "another-host", "pid": 1, "pid_started": "1"}
    alive = SyncRun.objects.create(source="x", owner={**elsewhere, "db_pid": pid,
                                                      "db_started": started.isoformat()})  # fmt: skip
    dead = SyncRun.objects.create(source="x", owner={**elsewhere, "db_pid": 2**30,
                                                     "db_started": started.isoformat()})  # fmt: skip
    # Same host: a pid above the kernel's pid_max, so no process has it.
    same_host_dead = SyncRun.objects.create(
        source="x", owner={"host": socket.gethostname(), "pid": 2**22 + 7, "pid_started": "1"}
    )

    with transaction.atomic():
        assert reap_stale_runs() == 2

    statuses = dict(SyncRun.objects.values_list("pk", "status"))
    assert statuses[alive.pk] == SyncRun.Status.RUNNING
    assert statuses[dead.pk] == SyncRun.Status.FAILED
    assert statuses[same_host_dead.pk] == SyncRun.Status.FAILED
