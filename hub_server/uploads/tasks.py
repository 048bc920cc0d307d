"""Celery tasks of the upload workflow: three lines each, calling a service, safe to run twice."""

import logging
import os

from celery import shared_task
from celery.signals import worker_init, worker_ready
from django.conf import settings

from hub_server.uploads import retention, services


@shared_task(
    name="hub_server.uploads.tasks.validate_upload_task",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.HUB_VALIDATION_TIME_LIMIT,
    soft_time_limit=max(settings.HUB_VALIDATION_TIME_LIMIT - 30, 10),
)
def validate_upload_task(upload_id: int) -> str | None:
    upload = services.validate_upload(upload_id)
    return upload.status if upload else None


@shared_task(name="hub_server.uploads.tasks.requeue_stuck_uploads_task")
def requeue_stuck_uploads_task() -> list[int]:
    return services.requeue_stuck_uploads()


@shared_task(name="hub_server.uploads.tasks.purge_rejected_uploads_task")
def purge_rejected_uploads_task() -> dict:
    return retention.purge_rejected_archives().as_dict()


@worker_ready.connect
def _sweep_on_start(sender=None, **kwargs) -> None:
    # A worker (re)started after the broker was down: the uploads stored meanwhile are sent now,
    # not at beat's next sweep.
    from django.db import connection

    try:
        services.requeue_stuck_uploads()
    except Exception:  # noqa: BLE001 - beat's sweep will do it
        logging.getLogger(__name__).exception("the sweep at worker start failed")
    finally:
        connection.close()


@worker_init.connect
def _warm_imports(**kwargs) -> None:
    # torch and transformers take seconds to import: pay that when the worker starts, not in the
    # first upload's validation.
    import torch
    import transformers  # noqa: F401

    import adapters_core  # noqa: F401

    # One intra-op thread per worker process: validations run in parallel as processes, and
    # threads on top of them only oversubscribe the cores (HUB_VALIDATION_TORCH_THREADS to change).
    torch.set_num_threads(int(os.environ.get("HUB_VALIDATION_TORCH_THREADS") or 1))
