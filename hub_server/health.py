"""Liveness and readiness probes."""

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from hub_server.catalog.cache import shared as shared_cache


def healthz(request):
    # The framework's floor for benchmarks: no database, no template.
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {exc}"
    if settings.CELERY_BROKER_URL:
        try:
            from hub_server.celery import app

            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["broker"] = f"error: {exc}"
    else:
        checks["broker"] = "eager (no broker configured)"
    # Informational: without its cache the hub still serves every read from the database, slower,
    # so "degraded" does not make the process unready.
    checks["cache"] = shared_cache.health()
    try:
        settings.HUB_DATA_DIR.mkdir(parents=True, exist_ok=True)
        checks["storage"] = "ok" if settings.HUB_DATA_DIR.is_dir() else "missing"
    except OSError as exc:
        checks["storage"] = f"error: {exc}"
    ready = all(not v.startswith("error") and v != "missing" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
