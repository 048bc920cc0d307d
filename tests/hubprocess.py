"""`HubProcesses`: a hub's web server (gunicorn, two workers) and its management commands as real
processes of their own, sharing one database (and Redis, when given): what a user meets when a
sync or a publish runs beside the server. For tests of what crosses process boundaries.

    hub = HubProcesses(tmp_path, env={"REDIS_URL": ...})   # default: the embedded SQLite setup
    hub.manage("migrate")
    hub.start()
    status, body = hub.get("/api/v1/adapters/")
    hub.stop()
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Variables of the test run that must not leak into the hub's processes: they choose the setup.
_SETUP_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CACHE_KEY_PREFIX")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HubProcesses:
    def __init__(self, root: Path, env: dict[str, str] | None = None, workers: int = 2):
        self.root = Path(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        base = {k: v for k, v in os.environ.items() if k not in _SETUP_VARIABLES}
        self.env = {
            **base,
            "HUB_VAR_DIR": str(self.root / "var"),
            "HUB_DATA_DIR": str(self.root / "hub-data"),
            "DJANGO_SETTINGS_MODULE": "hub_server.settings",
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.server: subprocess.Popen | None = None
        self.log = self.root / "server.log"

    def manage(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self, timeout: float = 60) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "gunicorn", "hub_server.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
        with self.log.open("ab") as log:
            self.server = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log.read_text()[-4000:]}")
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not start:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
        self.server = None

    def get(self, path: str, timeout: float = 30, headers=None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str):
        status, body = self.get(path)
        return status, json.loads(body) if body.startswith((b"{", b"[")) else None

    def __enter__(self) -> HubProcesses:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def converge(check, within: float, every: float = 0.1, confirm: int = 6) -> float:
    """Seconds until `check()` holds, and then holds `confirm` times in a row (every worker of
    the server has answered it); fails after `within` seconds."""
    started = time.monotonic()
    deadline = started + within
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last is True and all(check() is True for _ in range(confirm)):
            return time.monotonic() - started
        time.sleep(every)
    raise AssertionError(f"not converged within {within} s; last check: {last!r}")


# -- the services a hub's processes share --------------------------------------------------------


def postgres_server() -> str | None:
    """The URL of the test run's PostgreSQL server (no database), or None on SQLite."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        return None
    user = db["USER"] or "postgres"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"


def psql(server: str, sql: str) -> None:
    subprocess.run(
        ["psql", f"{server}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


def create_database(server: str, name: str) -> str:
    """A new, empty database `name` (dropped first if left over); returns its URL."""
    drop_database(server, name)
    psql(server, f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def drop_database(server: str, name: str) -> None:
    psql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RedisServer:
    """A private redis-server on a free port (never the shared one), without persistence: a
    test may stop and start it as an outage would."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        import redis

        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None
