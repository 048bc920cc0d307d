"""The life of a `SyncRun` record: who runs it, and what becomes of it when its process dies.

A run is created `running` before any work, in its own committed row, so it is visible while the
sync works. If the process is killed (SIGKILL, OOM, a lost container), nothing ever finishes the
row; the next sync reaps it: a run whose process is gone is marked `failed`. Liveness is decided by
what can be checked from here: on the same host, the process id with its start time (a reused pid
is another process); on PostgreSQL, the run's database session (id and start), which ends with its
process on any host; otherwise, age (HUB_SYNC_STALE_SECONDS).
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from hub_server.catalog.models import SyncRun

REAPED = (
    "the sync stopped without finishing (its process ended: killed or crashed); "
    "it wrote nothing, as a sync writes in one transaction"
)


def _process_started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _db_session() -> tuple[int, str] | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        pid, started = cursor.fetchone()
    return pid, started.isoformat()


def current_owner() -> dict[str, Any]:
    """What identifies this process (and its database session) as the owner of a run."""
    owner: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": _process_started(os.getpid()),
    }
    session = _db_session()
    if session is not None:
        owner["db_pid"], owner["db_started"] = session
    return owner


def _alive(run: SyncRun) -> bool:
    owner = run.owner or {}
    if owner.get("host") == socket.gethostname() and owner.get("pid"):
        if owner.get("pid_started") is not None:
            return _process_started(owner["pid"]) == owner["pid_started"]
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if owner.get("db_pid") and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT backend_start FROM pg_stat_activity WHERE pid = %s",
                           [owner["db_pid"]])  # fmt: skip
            row = cursor.fetchone()
        return row is not None and row[0].isoformat() == owner.get("db_started")
    stale_after = timedelta(seconds=settings.HUB_SYNC_STALE_SECONDS)
    return timezone.now() - run.started_at < stale_after


def reap_stale_runs() -> int:
    """Mark `failed` every running run whose process is gone; return how many."""
    reaped = 0
    for run in SyncRun.objects.filter(status=SyncRun.Status.RUNNING):
        if _alive(run):
            continue
        reaped += SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED, message=REAPED, finished_at=timezone.now()
        )
    return reaped


def finish(run: SyncRun, started: float) -> None:
    """Record the outcome. After a lost connection this reconnects: the failed transaction's
    rollback closed the dead connection (Django), so the save opens a new one."""
    run.finished_at = timezone.now()
    run.duration_ms = int((time.perf_counter() - started) * 1000)
    if run.status == SyncRun.Status.FAILED:
        # The transaction rolled back: the run's counts describe nothing that happened.
        run.added = run.updated = run.removed = run.unchanged = 0
        run.counts = {}
    run.save()
