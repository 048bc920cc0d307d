"""`LocalStack`: the production-style stack without Docker (scripts/stack/), driven from Python.

Gunicorn (2 workers), a Celery worker and Celery beat with DJANGO_DEBUG=0, against a PostgreSQL
database and a Redis database number of their own, everything else under `data_dir`. For tests and
benchmarks:

    stack = LocalStack(tmp_path / "stack", port=8123, db_name="hub_stack_x", redis_db=11)
    stack.create_database()
    stack.start()          # migrates, collects static files, starts the three processes
    stack.wait_ready()     # /readyz answers 200 and the worker answers a ping
    requests.get(stack.url + "/api/v1/adapters/")
    stack.restart()
    stack.stop(); stack.drop_database(); stack.flush_redis()
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "stack"
ROLES = ("web", "worker", "beat")


class StackError(RuntimeError):
    pass


class LocalStack:
    def __init__(
        self,
        data_dir: str | Path,
        port: int,
        db_name: str,
        redis_db: int,
        *,
        pg_url: str = "postgres://postgres@127.0.0.1:5432",
        redis_url: str = "redis://127.0.0.1:6379",
        env: dict[str, str] | None = None,
        python: str | Path | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.db_name = db_name
        self.redis_db = redis_db
        self.pg_url = pg_url.rstrip("/")
        self.redis_url = f"{redis_url.rstrip('/')}/{redis_db}"
        self.python = str(python or ROOT / ".venv" / "bin" / "python")
        self.url = f"http://127.0.0.1:{port}"
        self.env_file = self.data_dir / "stack.env"
        self.env = {
            "DATABASE_URL": f"{self.pg_url}/{db_name}",
            "CELERY_BROKER_URL": self.redis_url,
            "REDIS_URL": self.redis_url,
            "CACHE_KEY_PREFIX": f"stack-{port}",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            "DJANGO_SECURE_HSTS_SECONDS": "0",
            "HUB_VAR_DIR": str(self.data_dir / "var"),
            "HUB_DATA_DIR": str(self.data_dir / "hub-data"),
            "STACK_HOST": "127.0.0.1",
            "STACK_PORT": str(port),
            "STACK_CREATE_DB": "0",
            "GUNICORN_WORKERS": "2",
            "CELERY_WORKER_CONCURRENCY": "2",
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }

    # -- processes ------------------------------------------------------------------------------

    def _script(self, name: str, timeout: float = 180) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_env()
        result = subprocess.run(
            ["bash", str(SCRIPTS / name), str(self.data_dir)],
            env={**os.environ, "STACK_ENV": str(self.env_file), "PYTHON": self.python},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise StackError(
                f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                + self.logs()
            )
        return result.stdout

    def write_env(self) -> None:
        # The env file is sourced by bash (scripts/stack/common.sh): quote JSON and spaces.
        lines = [f"{key}={shlex.quote(value)}" for key, value in self.env.items()]
        self.env_file.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self._script("start.sh")

    def stop(self) -> None:
        if self.env_file.exists():
            self._script("stop.sh")

    def restart(self) -> None:
        self.stop()
        self.start()

    def pids(self) -> dict[str, int | None]:
        """The pid of each role whose process is alive."""
        found: dict[str, int | None] = {}
        for role in ROLES:
            pidfile = self.data_dir / "run" / f"{role}.pid"
            pid = int(pidfile.read_text().strip()) if pidfile.exists() else None
            if pid is not None:
                try:
                    os.kill(pid, 0)
                except OSError:
                    pid = None
            found[role] = pid
        return found

    def wait_ready(self, timeout: float = 120) -> None:
        """Until /readyz answers 200, the worker answers a ping and beat runs."""
        deadline = time.monotonic() + timeout
        problem = "not started"
        while time.monotonic() < deadline:
            dead = [role for role, pid in self.pids().items() if pid is None]
            if dead:
                raise StackError(f"stack processes not running: {dead}\n" + self.logs())
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as response:
                    ready = response.status == 200
                problem = "" if ready else f"/readyz {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                problem = f"/readyz: {exc}"
            if not problem and self.worker_answers():
                return
            problem = problem or "the worker does not answer a ping"
            time.sleep(0.5)
        raise StackError(f"stack not ready after {timeout}s: {problem}\n" + self.logs())

    def worker_answers(self) -> bool:
        from celery import Celery

        app = Celery(broker=self.redis_url)
        try:
            return bool(app.control.ping(timeout=1.0))
        finally:
            app.close()

    def logs(self, lines: int = 40) -> str:
        out = []
        for path in sorted((self.data_dir / "log").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    # -- commands against the stack's settings ---------------------------------------------------

    def manage(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`manage.py ARGS` with the stack's environment (raises on failure)."""
        result = subprocess.run(
            [self.python, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "hub_server.settings", **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise StackError(f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result

    # -- the stack's own database and Redis number -------------------------------------------------

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", f"{self.pg_url}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
            check=True,
            capture_output=True,
            text=True,
        )

    def create_database(self) -> None:
        self.drop_database()
        self._psql(f'CREATE DATABASE "{self.db_name}"')

    def drop_database(self) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    def __enter__(self) -> LocalStack:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


NGINX_TEMPLATE = ROOT / "docker" / "nginx" / "default.conf.template"
NGINX_413 = ROOT / "docker" / "nginx" / "413.json"


def render_nginx_template(variables: dict[str, str], template: Path = NGINX_TEMPLATE) -> str:
    """What the nginx image's envsubst makes of the template: only the given ${NAME}s replaced."""
    text = template.read_text()
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value)
    return text


class LocalNginx:
    """docker/nginx/default.conf.template run by the local nginx in front of a LocalStack, as the
    compose file runs it (files and static folders read from the stack's data_dir)."""

    def __init__(self, stack: LocalStack, port: int, *, max_body: str = "1m", nginx: str = "nginx"):
        self.stack = stack
        self.port = port
        self.nginx = nginx
        self.url = f"http://127.0.0.1:{port}"
        self.dir = stack.data_dir / "nginx"
        self.process: subprocess.Popen | None = None
        self.variables = {
            "NGINX_LISTEN_PORT": str(port),
            "NGINX_UPSTREAM": f"127.0.0.1:{stack.port}",
            "NGINX_CLIENT_MAX_BODY_SIZE": max_body,
            "NGINX_FILES_ROOT": stack.env.get("HUB_FILES_DIR")
            or str(Path(stack.env["HUB_DATA_DIR"]) / "files"),
            "NGINX_STATIC_ROOT": str(Path(stack.env["HUB_VAR_DIR"]) / "static"),
        }

    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        server = render_nginx_template(self.variables).replace(
            "/usr/share/nginx/errors/413.json", str(NGINX_413)
        )
        (self.dir / "default.conf").write_text(server)
        temp = self.dir / "temp"
        temp.mkdir(exist_ok=True)
        # As root, nginx's workers would drop to a user that cannot read the test's temp dirs.
        user = "user root;" if os.geteuid() == 0 else ""
        main = f"""
{user}
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {self.dir}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    sendfile on;
    include {self.dir}/default.conf;
}}
"""
        path = self.dir / "nginx.conf"
        path.write_text(main)
        return path

    def test_config(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.nginx, "-t", "-c", str(self.write_config()), "-e", str(self.dir / "error.log")],
            capture_output=True,
            text=True,
        )

    def start(self, timeout: float = 20) -> None:
        config = self.write_config()
        self.process = subprocess.Popen(
            [self.nginx, "-c", str(config), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(f"nginx exited: {self.process.stderr.read().decode()}")
            try:
                with urllib.request.urlopen(self.url + "/nginx-health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise StackError("nginx did not answer /nginx-health")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None
