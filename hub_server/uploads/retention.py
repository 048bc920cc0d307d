"""How long upload archives are kept, and what one user may upload.

Rejected uploads keep their row and report, but their archive is deleted HUB_REJECTED_RETENTION_DAYS
after the rejection (beat's `purge_rejected_uploads_task`, hourly; `manage.py
purge_rejected_uploads`). A blob is content-addressed and may be shared: it is deleted only when no
other upload still holding its archive, no hosted version and no version file names it. Deleting
a blob and storing a new upload of the same bytes take the same per-blob lock (a PostgreSQL
advisory lock), so an upload never ends up naming a blob the purge just deleted.

Quotas: per user over the last HUB_UPLOAD_QUOTA_WINDOW_HOURS, at most HUB_UPLOAD_QUOTA_COUNT
uploads and HUB_UPLOAD_QUOTA_BYTES of archives (rejected ones count; staff are exempt).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.db.models.functions import Now
from django.utils import timezone

from hub_server import storage
from hub_server.catalog.models import AdapterVersion, VersionFile
from hub_server.uploads.models import Upload

log = logging.getLogger(__name__)


def lock_blob(key: str) -> None:
    """Serialise, until the transaction ends, the writers that store or delete `key`."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def blob_referenced(key: str, except_upload: int | None = None) -> bool:
    uploads = Upload.objects.filter(archive_key=key, archive_purged_at__isnull=True)
    if except_upload is not None:
        uploads = uploads.exclude(pk=except_upload)
    return (
        uploads.exists()
        or AdapterVersion.objects.filter(storage_key=key).exists()
        or VersionFile.objects.filter(storage_key=key).exists()
    )


@dataclass
class PurgeResult:
    uploads: int = 0
    blobs: int = 0
    bytes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def purge_rejected_archives(days: int | None = None, dry_run: bool = False) -> PurgeResult:
    """Delete the archives of uploads rejected more than `days` (HUB_REJECTED_RETENTION_DAYS)
    days ago; 0 days in the setting keeps them forever."""
    days = settings.HUB_REJECTED_RETENTION_DAYS if days is None else days
    result = PurgeResult()
    if days <= 0:
        return result
    cutoff = timezone.now() - timedelta(days=days)
    due = Upload.objects.filter(
        status=Upload.Status.REJECTED, finished_at__lt=cutoff, archive_purged_at__isnull=True
    ).exclude(archive_key="")
    for upload_id, key, size in due.values_list("pk", "archive_key", "archive_size").iterator():
        result.uploads += 1
        if dry_run:
            if not blob_referenced(key, upload_id) and storage.blob_exists(key):
                result.blobs += 1
                result.bytes += size
            continue
        with transaction.atomic():
            lock_blob(key)
            if not blob_referenced(key, except_upload=upload_id) and storage.blob_exists(key):
                storage.delete_blob(key)
                result.blobs += 1
                result.bytes += size
            Upload.objects.filter(pk=upload_id).update(archive_purged_at=Now())
    if result.uploads:
        log.info("purged the archives of %s rejected upload(s): %s", result.uploads, result)
    return result


def _recent_uploads(user):
    since = timezone.now() - timedelta(hours=settings.HUB_UPLOAD_QUOTA_WINDOW_HOURS)
    return Upload.objects.filter(user=user, created_at__gte=since)


def _bytes_used(user) -> int:
    return _recent_uploads(user).aggregate(total=Sum("archive_size"))["total"] or 0


def quota_error(user, incoming_bytes: int = 0) -> str | None:
    """Why `user` may not upload `incoming_bytes` more now, or None."""
    if user is None or user.is_staff:
        return None
    hours = settings.HUB_UPLOAD_QUOTA_WINDOW_HOURS
    count_cap, bytes_cap = settings.HUB_UPLOAD_QUOTA_COUNT, settings.HUB_UPLOAD_QUOTA_BYTES
    if count_cap > 0 and _recent_uploads(user).count() >= count_cap:
        return (
            f"upload quota reached: at most {count_cap} uploads per {hours} h per user "
            "(HUB_UPLOAD_QUOTA_COUNT); try again later"
        )
    if bytes_cap > 0:
        used = _bytes_used(user)
        if used + incoming_bytes > bytes_cap:
            return (
                f"upload quota reached: at most {bytes_cap} bytes of uploads per {hours} h per "
                f"user (HUB_UPLOAD_QUOTA_BYTES); {used} used, this upload is at least "
                f"{incoming_bytes}"
            )
    return None


def quota_bytes_left(user) -> int | None:
    """Bytes `user` may still upload in the window (None: no byte quota applies)."""
    if user is None or user.is_staff or settings.HUB_UPLOAD_QUOTA_BYTES <= 0:
        return None
    return max(settings.HUB_UPLOAD_QUOTA_BYTES - _bytes_used(user), 0)
