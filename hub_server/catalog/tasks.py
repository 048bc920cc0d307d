"""Celery entry points of the catalogue: thin wrappers over services, safe to run twice."""

from celery import shared_task

from hub_server.catalog.mirror_tasks import mirror_files_task  # noqa: F401 - so Celery finds it
from hub_server.catalog.sync import sync_hub_repository


@shared_task(name="hub_server.catalog.tasks.sync_hub_task", acks_late=True, time_limit=1800)
def sync_hub_task(source: str | None = None, branch: str | None = None, full: bool = False) -> int:
    # A second delivery finds the commit already synced and records a no-op.
    return sync_hub_repository(source, branch, full).pk
