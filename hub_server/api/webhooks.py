"""Sync requests: who may ask (staff, or a push webhook signed with HUB_WEBHOOK_SECRET) and the
service that queues the sync."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from django.conf import settings
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

SIGNATURE_HEADER = "X-Hub-Signature-256"


def webhook_secret() -> str:
    return getattr(settings, "HUB_WEBHOOK_SECRET", None) or os.environ.get("HUB_WEBHOOK_SECRET", "")


def signature_is_valid(body: bytes, header: str, secret: str) -> bool:
    """`header` is `sha256=<hex>` of HMAC-SHA256(secret, raw body), as GitHub and Gitea send it."""
    if not secret or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


class IsStaffOrSignedWebhook(BasePermission):
    """Staff users (session or basic auth), or a request whose body carries a valid signature.
    Anything else is a 403, also for anonymous callers (a webhook has no credentials to offer)."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if user and user.is_authenticated and user.is_staff:
            if getattr(request.auth, "can_write", True) is False:
                raise PermissionDenied("This API token is read-only; a sync needs the write scope.")
            request.signed_webhook = False
            return True
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not header:
            raise PermissionDenied(
                "Staff credentials or a webhook signature (X-Hub-Signature-256) are required."
            )
        secret = webhook_secret()
        if not secret:
            raise PermissionDenied("Signed webhooks are disabled: HUB_WEBHOOK_SECRET is not set.")
        if not signature_is_valid(request.body, header, secret):
            raise PermissionDenied("Invalid webhook signature.")
        request.signed_webhook = True
        return True


def ignored_push_reason(body: bytes, event: str) -> str | None:
    """Why a signed webhook needs no sync (a ping, a push to another branch), else None."""
    if event == "ping":
        return "pong: webhook configured"
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None
    ref = payload.get("ref") if isinstance(payload, dict) else None
    branch = settings.HUB_REPO_BRANCH
    if (
        isinstance(ref, str)
        and ref.startswith("refs/")
        and branch
        and ref != f"refs/heads/{branch}"
    ):
        return f"ignored: push to {ref}, the hub syncs refs/heads/{branch}"
    return None


@dataclass
class QueuedSync:
    task_id: str
    run_id: int | None


def queue_hub_sync(full: bool = False) -> QueuedSync:
    """Send `sync_hub_task` to the workers; without a broker it runs here, and the run is known."""
    from hub_server.catalog.tasks import sync_hub_task

    result = sync_hub_task.delay(full=full)
    run_id = result.result if settings.CELERY_TASK_ALWAYS_EAGER else None
    return QueuedSync(task_id=str(result.id), run_id=run_id)
