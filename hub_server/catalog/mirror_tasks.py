"""Celery entry point of mirroring (imported by tasks.py so that autodiscovery registers it)."""

from celery import shared_task

from hub_server.catalog.mirror import mirror_files


@shared_task(name="hub_server.catalog.mirror_tasks.mirror_files_task", acks_late=True)
def mirror_files_task(adapter: str | None = None, limit: int | None = None) -> dict[str, int]:
    # Hosted versions are skipped, so a second delivery only retries what is still external.
    results = mirror_files(adapter=adapter, limit=limit)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts
