"""Who validates an upload: an atomic claim with a lease, renewed while the validation runs.

A worker takes an upload with one conditional UPDATE (pending, or validating under an expired
lease -> validating under a new token and lease, one more attempt), so two deliveries of the same
task never validate the same upload at once: the second finds the claim held and leaves. While
the validation runs, a thread renews the lease every third of HUB_VALIDATION_LEASE_SECONDS; a
worker that dies stops renewing, its lease expires, and the sweep (dispatch.requeue_stuck_uploads)
queues the upload again. Only the holder of the current token may finish the upload, so a worker
that lost its claim (it stalled past its lease) cannot overwrite the result of the one that took
over. Times are the database's clock (`Now()`), the same for every worker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from hub_server.uploads.models import Upload

log = logging.getLogger(__name__)


class ClaimLost(Exception):
    """The worker's claim on the upload expired and another worker took it."""


def lease_seconds() -> int:
    return max(int(settings.HUB_VALIDATION_LEASE_SECONDS), 3)


def _lease_end():
    return ExpressionWrapper(
        Now() + timedelta(seconds=lease_seconds()), output_field=DateTimeField()
    )


def claimable() -> Q:
    """Uploads a worker may take now: pending, or validating under a lease that expired."""
    return Q(status=Upload.Status.PENDING) | Q(
        Q(lease_expires_at__lt=Now()) | Q(lease_expires_at__isnull=True),
        status=Upload.Status.VALIDATING,
    )


def claim_upload(upload_id: int) -> Upload | None:
    """Take the upload for validation (one more attempt); None when it is final or another
    worker holds it."""
    token = uuid.uuid4().hex
    taken = (
        Upload.objects.filter(claimable(), pk=upload_id).update(
            status=Upload.Status.VALIDATING,
            started_at=Now(),
            attempts=F("attempts") + 1,
            claim_token=token,
            lease_expires_at=_lease_end(),
        )
        == 1
    )
    if not taken:
        return None
    return Upload.objects.select_related("organisation", "user").get(pk=upload_id)


def holder(upload: Upload):
    """The upload's row while `upload` (as claimed) still holds it."""
    return Upload.objects.filter(
        pk=upload.pk, claim_token=upload.claim_token, status=Upload.Status.VALIDATING
    )


def hold_claim(upload: Upload) -> None:
    """Lock the row for the current transaction; ClaimLost when the claim is no longer ours."""
    if not holder(upload).select_for_update().exists():
        raise ClaimLost(f"upload {upload.pk}: the claim was lost to another worker")


def renew(upload: Upload) -> bool:
    return holder(upload).update(lease_expires_at=_lease_end()) == 1


@contextmanager
def leased(upload: Upload):
    """Renew the claim's lease in a thread while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(lease_seconds() / 3):
                try:
                    if not renew(upload):
                        log.warning("upload %s: claim lost while validating", upload.pk)
                        return
                except Exception:  # noqa: BLE001 - try again at the next beat
                    log.exception("upload %s: could not renew the claim", upload.pk)
                    close_old_connections()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"upload-{upload.pk}-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def finish(upload: Upload, status: str, report: list[dict], message: str, **fields) -> Upload:
    """Write the final status, if the claim is still ours (else ClaimLost)."""
    values = {
        "status": status,
        "report": report,
        "message": message,
        "finished_at": Now(),
        "lease_expires_at": None,
        **fields,
    }
    if holder(upload).update(**values) != 1:
        raise ClaimLost(f"upload {upload.pk}: the claim was lost to another worker")
    upload.refresh_from_db()
    return upload


def release(upload: Upload, message: str) -> Upload:
    """Give the upload back, pending and not counted as an attempt, for the sweep to send again
    (a transient failure of this hub, not of the upload: the file storage is full)."""
    values = {
        "status": Upload.Status.PENDING,
        "message": message,
        "claim_token": "",
        "lease_expires_at": None,
        "queued_at": None,
        "attempts": F("attempts") - 1,
    }
    if holder(upload).update(**values) != 1:
        raise ClaimLost(f"upload {upload.pk}: the claim was lost to another worker")
    upload.refresh_from_db()
    return upload
