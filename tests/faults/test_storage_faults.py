"""Uploads against a full or read-only file storage, per-user quotas, and the retention purge of
rejected archives.

A full or read-only storage is a real filesystem: a small tmpfs mounted over the test's files dir
(as root; the tests skip where mounting is not allowed).
"""

from __future__ import annotations

import io
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from hub_server import storage
from hub_server.accounts import services as accounts
from hub_server.uploads import services
from hub_server.uploads.models import Upload
from tests.uploads.conftest import demo_catalogue, upload_settings  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(demo_catalogue):  # noqa: F811
    user = User.objects.create(username="carol")
    accounts.create_organisation("lab", owner=user)
    return user


@pytest.fixture
def client(lab) -> APIClient:
    _, secret = accounts.create_token(lab, scope="write")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return api


def post(client: APIClient, data: bytes):
    return client.post(
        "/api/v1/uploads/",
        {
            "archive": SimpleUploadedFile("a.zip", data),
            "task": "sentiment",
            "subtask": "demo-reviews",
            "org": "lab",
        },
        format="multipart",
    )


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def spool_dir(tmp_path, settings) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    return spool


@pytest.fixture
def mount(tmp_path, settings):
    """mount(size_kb, read_only=False) -> the storage root, a tmpfs of that size."""
    mounted: list[Path] = []

    def make(size_kb: int, read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small filesystem needs root")
        root = tmp_path / f"store-{len(mounted)}"
        root.mkdir()
        options = f"size={size_kb}k" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(root)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(root)
        settings.STORAGES = {
            **settings.STORAGES,
            "adapter_files": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(root)},
            },
        }
        return root

    yield make
    for root in mounted:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


# -- full or read-only storage ----------------------------------------------------------------------


def test_a_full_storage_refuses_the_upload_and_stores_nothing(client, mount, spool_dir):
    root = mount(128)
    response = post(client, os.urandom(512 * 1024))
    assert response.status_code == 507, response.content
    message = response.json()["errors"]["archive"][0]
    assert "the file storage is full" in message and "nothing was stored" in message
    assert Upload.objects.count() == 0
    assert files_under(root) == [], "a partial blob was left in the storage"
    assert files_under(spool_dir) == [], "the spooled temp file was left behind"
    # a small one still fits
    assert post(client, os.urandom(16 * 1024)).status_code == 202


def test_bytes_refused_by_a_full_disk_are_stored_once_there_is_room(mount, spool_dir):
    root = mount(256)
    filler = root / "filler"
    filler.write_bytes(b"\0" * 160 * 1024)
    data = os.urandom(128 * 1024)
    with pytest.raises(storage.StorageWriteError, match="full"):
        storage.store_bytes(data)
    filler.unlink()
    # nothing half-written sits under the key: the same bytes store and read back whole
    blob = storage.store_bytes(data)
    assert b"".join(storage.iter_blob(blob.key)) == data
    assert [p.name for p in files_under(root)] == [blob.sha256]


def test_a_read_only_storage_refuses_the_upload_and_stores_nothing(client, mount, spool_dir):
    root = mount(1024, read_only=True)
    response = post(client, os.urandom(32 * 1024))
    assert response.status_code == 503, response.content
    message = response.json()["errors"]["archive"][0]
    assert "the file storage is read-only" in message
    assert Upload.objects.count() == 0
    assert files_under(root) == [] and files_under(spool_dir) == []


# -- quotas -------------------------------------------------------------------------------------


def test_the_upload_count_quota_is_a_429_naming_it(client, lab, settings):
    settings.HUB_UPLOAD_QUOTA_COUNT = 2
    assert post(client, os.urandom(1024)).status_code == 202
    assert post(client, os.urandom(1024)).status_code == 202
    response = post(client, os.urandom(1024))
    assert response.status_code == 429, response.content
    assert "HUB_UPLOAD_QUOTA_COUNT" in response.json()["errors"]["archive"][0]
    assert "at most 2 uploads per 24 h" in response.json()["errors"]["archive"][0]
    assert Upload.objects.count() == 2
    # an upload older than the window no longer counts
    Upload.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert post(client, os.urandom(1024)).status_code == 202
    # staff are exempt
    lab.is_staff = True
    lab.save()
    assert post(client, os.urandom(1024)).status_code == 202


def test_the_upload_bytes_quota_is_a_429_and_stores_nothing(client, settings):
    settings.HUB_UPLOAD_QUOTA_BYTES = 100_000
    assert post(client, os.urandom(60_000)).status_code == 202
    refused = os.urandom(60_000)
    response = post(client, refused)
    assert response.status_code == 429, response.content
    message = response.json()["errors"]["archive"][0]
    assert "HUB_UPLOAD_QUOTA_BYTES" in message and "60000 used" in message
    assert Upload.objects.count() == 1
    import hashlib

    assert not storage.blob_exists(storage.content_key(hashlib.sha256(refused).hexdigest()))
    assert post(client, os.urandom(30_000)).status_code == 202  # what is left still fits


# -- retention of rejected archives ----------------------------------------------------------------


def stored(user, data: bytes, status: str = "rejected", days_ago: float = 0) -> Upload:
    from unittest import mock

    with mock.patch.object(services, "queue_validation"):
        up = services.create_upload(
            user=user, archive=io.BytesIO(data), task="sentiment", subtask="demo-reviews",
            org="lab",
        )  # fmt: skip
    report = [{"name": "archive", "ok": False, "message": "not a zip", "duration_ms": 1}]
    Upload.objects.filter(pk=up.pk).update(
        status=status,
        report=report if status == "rejected" else [],
        message="archive: not a zip" if status == "rejected" else "",
        finished_at=timezone.now() - timedelta(days=days_ago) if status == "rejected" else None,
    )
    up.refresh_from_db()
    return up


def test_rejected_archives_are_deleted_after_the_retention_period(lab, settings):
    settings.HUB_REJECTED_RETENTION_DAYS = 30
    old = stored(lab, b"old rejected bytes", days_ago=31)
    recent = stored(lab, b"recent rejected bytes", days_ago=1)
    shared = stored(lab, b"shared bytes", days_ago=40)
    again = stored(lab, b"shared bytes", status="pending")  # the same bytes, uploaded again
    out = io.StringIO()
    call_command("purge_rejected_uploads", stdout=out)
    assert "2 rejected upload(s) past retention; deleted 1 archive(s)" in out.getvalue()

    old.refresh_from_db()
    assert old.archive_purged_at is not None and not storage.blob_exists(old.archive_key)
    assert old.status == "rejected" and old.message == "archive: not a zip" and old.report
    assert storage.blob_exists(recent.archive_key)
    assert Upload.objects.get(pk=recent.pk).archive_purged_at is None
    # still named by a pending upload: kept
    assert Upload.objects.get(pk=shared.pk).archive_purged_at is not None
    assert storage.blob_exists(again.archive_key)
    # a purged upload cannot be validated again; a second run finds nothing to do
    with pytest.raises(services.UploadRefused, match="retention"):
        services.revalidate_upload(old)
    out = io.StringIO()
    call_command("purge_rejected_uploads", stdout=out)
    assert out.getvalue().startswith("0 rejected upload(s)")
    # the same bytes uploaded after the purge are stored again
    fresh = stored(lab, b"old rejected bytes", status="pending")
    assert b"".join(storage.iter_blob(fresh.archive_key)) == b"old rejected bytes"


def test_retention_zero_keeps_rejected_archives_and_beat_runs_the_purge(lab, settings):
    settings.HUB_REJECTED_RETENTION_DAYS = 0
    old = stored(lab, b"kept forever", days_ago=400)
    call_command("purge_rejected_uploads", stdout=io.StringIO())
    assert storage.blob_exists(old.archive_key)
    schedule = {e["task"]: e["schedule"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["hub_server.uploads.tasks.purge_rejected_uploads_task"] <= 3600
    assert schedule["hub_server.uploads.tasks.requeue_stuck_uploads_task"] <= 30


def test_a_full_storage_at_publish_time_delays_the_upload_instead_of_rejecting_it(
    lab, mount, settings, tmp_path
):
    from tests.uploads.conftest import save_tiny_adapter, zip_folder

    data = zip_folder(save_tiny_adapter(tmp_path / "trained"))
    up = stored(lab, data, status="pending")
    roomy = settings.STORAGES
    full = mount(512)
    storage.store_bytes(data)  # the upload's archive, in the new storage too
    free = os.statvfs(full).f_bavail * os.statvfs(full).f_frsize
    (full / "filler").write_bytes(b"\0" * (free - 4096))
    up = services.validate_upload(up.pk)
    assert up.status == "pending" and up.attempts == 0, up.message
    assert up.message.startswith("publishing delayed: the file storage is full")
    assert up.validation_delayed  # the sweep sends it again
    assert not Upload.objects.filter(pk=up.pk, adapter_version__isnull=False).exists()
    settings.STORAGES = roomy
    up = services.validate_upload(up.pk)
    assert up.status == "published" and up.attempts == 1, up.message
