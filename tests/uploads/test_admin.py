"""Moderation in the Django admin: staff see uploads with their report, re-run, yank, delete."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User

from hub_server.accounts import services as accounts
from hub_server.catalog.models import Adapter
from hub_server.uploads import services
from hub_server.uploads.models import Upload

from .conftest import zip_folder

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(demo_catalogue, tiny_adapter, django_capture_on_commit_callbacks):
    user = User.objects.create(username="alice")
    accounts.create_organisation("alice-lab", owner=user)
    with django_capture_on_commit_callbacks(execute=True):
        up = services.create_upload(
            user=user, archive=io.BytesIO(zip_folder(tiny_adapter)), task="sentiment",
            subtask="demo-reviews", org="alice-lab",
        )  # fmt: skip
    up.refresh_from_db()
    assert up.status == "published"
    return up


def test_staff_moderate_uploads(published, client, django_capture_on_commit_callbacks):
    staff = User.objects.create_superuser("mod", "mod@example.org", "pw")
    client.force_login(staff)
    assert client.get("/admin/uploads/upload/").status_code == 200
    page = client.get(f"/admin/uploads/upload/{published.pk}/change/")
    assert page.status_code == 200 and b"load" in page.content and b"FAILED" not in page.content

    url = "/admin/uploads/upload/"
    client.post(url, {"action": "yank_adapters", "_selected_action": [published.pk]})
    adapter = Adapter.objects.get(pk=published.adapter_version.adapter_id)
    assert adapter.status == "yanked"
    client.post(url, {"action": "restore_adapters", "_selected_action": [published.pk]})
    adapter.refresh_from_db()
    assert adapter.status == "active"

    rejected = Upload.objects.create(
        user=published.user, organisation=published.organisation, task="sentiment",
        subtask="demo-reviews", archive_key=published.archive_key,
        archive_sha256=published.archive_sha256, archive_size=published.archive_size,
        status="rejected", report=[{"name": "archive", "ok": False, "message": "x", "duration_ms": 1}],
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"action": "rerun_validation", "_selected_action": [rejected.pk]})
    rejected.refresh_from_db()
    assert rejected.status == "published" and rejected.attempts == 1

    response = client.post(
        url, {"action": "delete_selected", "_selected_action": [rejected.pk], "post": "yes"}
    )
    assert response.status_code == 302 and not Upload.objects.filter(pk=rejected.pk).exists()
