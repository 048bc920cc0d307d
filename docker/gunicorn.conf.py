"""gunicorn settings of the web service, from the environment (the image and scripts/stack/)."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS") or multiprocessing.cpu_count() * 2 + 1)
threads = int(os.environ.get("GUNICORN_THREADS") or 1)
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 120)
graceful_timeout = 30
keepalive = 5
# Load Django once in the master, so workers share its memory and start at once.
preload_app = True
# A worker is replaced after this many requests (and some jitter), bounding any slow leak.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS") or 5000)
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = os.environ.get("GUNICORN_ERROR_LOG", "-")
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Only nginx (or the load balancer) talks to gunicorn; it sets X-Forwarded-*.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "*")
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None
# gunicorn >= 27 opens a control socket, by default one per user (~/.gunicorn): give each stack
# its own so that several can run side by side (older versions ignore this setting).
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]


def when_ready(server):
    # Import every view (and what they import: torch, transformers) once in the master before the
    # workers fork, so their first request does not pay seconds of imports.
    if preload_app:
        from django.urls import get_resolver

        server.log.info("warmed %d URL patterns", len(get_resolver().url_patterns))
