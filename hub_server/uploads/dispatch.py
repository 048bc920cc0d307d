"""Handing validations to the workers, and the sweep that makes sure each upload gets one.

The request stores the upload, then sends the task once its transaction commits. When the
broker cannot take it (Redis down), the upload stays stored and pending with `queued_at` empty and
the message "validation delayed"; the request still answers 202. Beat runs the sweep every
HUB_UPLOAD_SWEEP_SECONDS, and every worker runs it when it starts, so a delayed upload is sent
within that interval of the broker being back (plus the worker's own reconnection). The sweep also
sends again uploads whose claim expired (their worker died: claims.py) and pending uploads whose
message was sent but never taken for longer than the validation time limit (a broker that lost
it). A message sent twice is harmless: the claim lets one worker validate, the other leaves.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from hub_server.uploads.models import Upload

log = logging.getLogger(__name__)

DELAYED_MESSAGE = (
    "validation delayed: the task queue is unavailable; the upload is stored and will be "
    "validated when the queue is back (checked every {seconds} s)"
)
# A pending upload younger than this may still have its send in flight (on_commit): not swept.
SEND_GRACE = timedelta(seconds=5)


def delayed_message() -> str:
    return DELAYED_MESSAGE.format(seconds=settings.HUB_UPLOAD_SWEEP_SECONDS)


def send_validation(upload_id: int) -> bool:
    """Send the validation task now; False (and the upload marked delayed) when the broker
    cannot take it. Eager mode (no broker) runs the validation here, errors propagating."""
    from hub_server.celery import app
    from hub_server.uploads.tasks import validate_upload_task

    if app.conf.task_always_eager:
        validate_upload_task.delay(upload_id)
        return True
    try:
        validate_upload_task.delay(upload_id)
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises, the upload is kept
        log.warning("upload %s: validation task not sent (%s); delayed", upload_id, exc)
        Upload.objects.filter(pk=upload_id, status=Upload.Status.PENDING).update(
            queued_at=None, message=delayed_message()
        )
        return False
    Upload.objects.filter(pk=upload_id).update(queued_at=Now())
    Upload.objects.filter(
        pk=upload_id, status=Upload.Status.PENDING, message__startswith="validation delayed"
    ).update(message="")
    return True


def queue_validation(upload_id: int) -> None:
    """Send the validation task once the current transaction commits."""
    transaction.on_commit(lambda: send_validation(upload_id))


def requeue_stuck_uploads(lost_after: timedelta | None = None) -> list[int]:
    """Send again: uploads never sent (delayed), validating under an expired claim, and pending
    ones sent longer than `lost_after` ago (default: the validation time limit + 60 s) without a
    worker taking them. Stops at the first send that fails (the broker is still down)."""
    lost_after = lost_after or timedelta(seconds=settings.HUB_VALIDATION_TIME_LIMIT + 60)
    now = timezone.now()
    stuck = (
        Upload.objects.filter(
            Q(status=Upload.Status.PENDING, queued_at__isnull=True, created_at__lt=now - SEND_GRACE)
            | Q(status=Upload.Status.PENDING, queued_at__lt=now - lost_after)
            | Q(status=Upload.Status.VALIDATING, lease_expires_at__lt=Now())
            | Q(status=Upload.Status.VALIDATING, lease_expires_at__isnull=True)
        )
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )
    sent = []
    for pk in stuck:
        log.warning("upload %s: queued again by the sweep", pk)
        if not send_validation(pk):
            break
        sent.append(pk)
    return sent
