"""Health check of the hub image: `healthcheck.py web|worker|beat` (exit 0 when healthy).

web     GET /readyz (database, broker, storage) on the local gunicorn
worker  the Celery worker of this container answers a ping
beat    the beat process of this container is alive and the broker is reachable
"""

import os
import socket
import sys
import urllib.request


def check_web() -> None:
    hosts = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = next((h for h in hosts if not h.startswith(".") and h != "*"), "localhost")
    port = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").rsplit(":", 1)[-1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/readyz", headers={"Host": host, "X-Forwarded-Proto": "https"}
    )
    with urllib.request.urlopen(request, timeout=8) as response:  # noqa: S310 - loopback
        if response.status != 200:
            raise SystemExit(f"/readyz answered {response.status}")


def check_worker() -> None:
    from hub_server.celery import app

    name = f"worker@{socket.gethostname()}"
    if not app.control.ping(destination=[name], timeout=5):
        raise SystemExit(f"{name} did not answer a ping")


def check_beat() -> None:
    with open("/tmp/celerybeat.pid") as f:
        os.kill(int(f.read().strip()), 0)
    from hub_server.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)


def main() -> None:
    sys.path.insert(0, "/app")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_server.settings")
    role = sys.argv[1] if len(sys.argv) > 1 else "web"
    {"web": check_web, "worker": check_worker, "beat": check_beat}[role]()


if __name__ == "__main__":
    main()
