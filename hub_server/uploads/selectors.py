"""Reads of the upload workflow."""

from __future__ import annotations

from django.db.models import QuerySet

from hub_server.uploads.models import Upload


def uploads_visible_to(user) -> QuerySet[Upload]:
    """Owner or staff only."""
    qs = Upload.objects.select_related("organisation", "adapter_version__adapter")
    return qs if user.is_staff else qs.filter(user=user)


def upload_for(user, upload_id: int) -> Upload | None:
    return uploads_visible_to(user).filter(pk=upload_id).first()
