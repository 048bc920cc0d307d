"""POST /api/v1/uploads/ and GET /api/v1/uploads/{id}/: auth, scopes, orgs, the size cap."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from hub_server.accounts import services as accounts
from hub_server.uploads import services
from hub_server.uploads.models import Upload

from .conftest import zip_folder

pytestmark = pytest.mark.django_db


def client_for(user, scope="write") -> APIClient:
    _, secret = accounts.create_token(user, scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def form(folder, **fields):
    return {
        "archive": SimpleUploadedFile("adapter.zip", zip_folder(folder)),
        "task": "sentiment",
        "subtask": "demo-reviews",
        "org": "alice-lab",
        **fields,
    }


def test_upload_answers_202_and_the_owner_sees_the_report(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            "/api/v1/uploads/", form(tiny_adapter, card='{"description": "hi"}'), format="multipart"
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending" and body["status_url"].endswith(
        f"/api/v1/uploads/{body['id']}/"
    )
    assert response["Location"] == body["status_url"]
    assert len(callbacks) == 1  # the validation is queued only once the request commits
    callbacks[0]()
    detail = client.get(f"/api/v1/uploads/{body['id']}/").json()
    assert detail["status"] == "published", detail["report"]
    assert detail["adapter"]["identifier"] == "sentiment/demo-reviews@alice-lab"
    assert detail["card"] == {"description": "hi"}
    # someone else sees nothing; staff sees it
    bob = User.objects.create(username="bob")
    assert client_for(bob, "read").get(f"/api/v1/uploads/{body['id']}/").status_code == 404
    staff = User.objects.create(username="mod", is_staff=True)
    assert client_for(staff, "read").get(f"/api/v1/uploads/{body['id']}/").status_code == 200


def test_folder_files_are_accepted_too(alice, tiny_adapter, django_capture_on_commit_callbacks):
    files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in sorted(tiny_adapter.iterdir())]
    data = {"files": files, "task": "sentiment", "subtask": "demo-reviews", "org": "alice-lab"}
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post("/api/v1/uploads/", data, format="multipart")
    assert response.status_code == 202, response.content
    assert Upload.objects.get(pk=response.json()["id"]).status == "published"


def test_missing_token_is_refused(alice, tiny_adapter):
    response = APIClient().post("/api/v1/uploads/", form(tiny_adapter), format="multipart")
    assert response.status_code == 401
    assert "credentials were not provided" in response.json()["detail"]
    assert Upload.objects.count() == 0


def test_read_token_cannot_upload(alice, tiny_adapter):
    response = client_for(alice, "read").post(
        "/api/v1/uploads/", form(tiny_adapter), format="multipart"
    )
    assert response.status_code == 403 and "read-only" in response.json()["detail"]


def test_someone_elses_org_is_refused(alice, tiny_adapter):
    mallory = User.objects.create(username="mallory")
    response = client_for(mallory).post("/api/v1/uploads/", form(tiny_adapter), format="multipart")
    assert response.status_code == 403
    assert "not a member of organisation 'alice-lab'" in response.json()["errors"]["org"][0]
    assert Upload.objects.count() == 0


def test_file_over_the_cap_is_refused(alice, tiny_adapter, settings):
    settings.HUB_UPLOAD_MAX_BYTES = 1000
    response = client_for(alice).post("/api/v1/uploads/", form(tiny_adapter), format="multipart")
    assert response.status_code == 413
    assert "larger than HUB_UPLOAD_MAX_BYTES (1000 bytes)" in str(response.json())
    assert Upload.objects.count() == 0
    # a body that declares no length is capped while it streams
    with pytest.raises(services.UploadRefused, match="HUB_UPLOAD_MAX_BYTES") as exc:
        services.create_upload(
            user=alice, archive=iter([b"x" * 600, b"x" * 600]), task="t", subtask="s"
        )
    assert exc.value.status == 413


def test_bad_card_fields_are_400(alice, tiny_adapter):
    client = client_for(alice)
    response = client.post(
        "/api/v1/uploads/",
        form(tiny_adapter, card='{"favourite_colour": "red"}'),
        format="multipart",
    )
    assert response.status_code == 400
    assert "unknown card field(s) ['favourite_colour']" in response.json()["errors"]["card"][0]
    response = client.post("/api/v1/uploads/", {"task": "sentiment"}, format="multipart")
    assert response.status_code == 400 and {"subtask", "archive"} & set(response.json()["errors"])


def test_stuck_uploads_are_requeued_and_finished(
    alice, tiny_adapter, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        up = services.create_upload(
            user=alice, archive=open(zip_folder_path(tiny_adapter), "rb"), task="sentiment",
            subtask="demo-reviews", org="alice-lab",
        )  # fmt: skip
    # as if a worker died mid-validation, long ago
    Upload.objects.filter(pk=up.pk).update(
        status="validating", attempts=1, started_at=timezone.now() - timedelta(hours=2)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.requeue_stuck_uploads() == [up.pk]
    up.refresh_from_db()
    assert up.status == "published" and up.attempts == 2


def test_an_upload_interrupted_too_often_is_rejected(alice, tiny_adapter):
    with mock.patch.object(services, "queue_validation"):
        up = services.create_upload(
            user=alice, archive=open(zip_folder_path(tiny_adapter), "rb"), task="sentiment",
            subtask="demo-reviews", org="alice-lab",
        )  # fmt: skip
    Upload.objects.filter(pk=up.pk).update(status="validating", attempts=services.MAX_ATTEMPTS)
    up = services.validate_upload(up.pk)
    assert up.status == "rejected" and "interrupted 3 times" in up.message


def zip_folder_path(folder):
    target = folder.parent / f"{folder.name}.zip"
    zip_folder(folder, target)
    return target
