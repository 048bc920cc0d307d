"""Writes of the upload workflow. Every upload path (the API, the web form, the CLI through the API,
the demo loader) calls `create_upload`; the Celery task calls `validate_upload`.

The request only stores the bytes (streamed, capped) and the card and queues the validation once
its transaction commits. The validation runs the checks of checks.py, then publishes: files into
storage and rows into the catalogue (publishing.publish_adapter_folder), the adapter marked as
published here (a sync of the Hub repository leaves it alone), with its card's path and blob, and,
when the git export is on, the card committed into a clone of a Hub repository (hubrepo).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction

from hub_server import storage
from hub_server.accounts import services as accounts
from hub_server.accounts.models import Membership, Organisation
from hub_server.catalog import safe_yaml
from hub_server.catalog.models import Adapter
from hub_server.uploads import basemodels, checks, claims, hubrepo, retention
from hub_server.uploads.dispatch import queue_validation, requeue_stuck_uploads  # noqa: F401
from hub_server.uploads.models import Upload
from hub_server.uploads.publishing import (
    CARD_FIELDS,
    PublishError,
    card_path,
    publish_adapter_folder,
    render_card_yaml,
)
from hub_server.weburl import is_web_url, link_target, web_url_problem

log = logging.getLogger(__name__)

CARD_KEYS = {*CARD_FIELDS, "model_name", "model_class", "version_description", "score", "hf_readme"}
# A redelivered validation that was interrupted this many times is rejected (a poison upload
# that kills its worker must not take the queue down with it).
MAX_ATTEMPTS = 3


class UploadRefused(ValueError):
    """The request cannot become an upload; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


def resolve_organisation(
    user, org: str | None, scoped_to: Organisation | None = None
) -> Organisation:
    """The organisation an upload publishes to: `org` if the user is a member (default: the
    personal one). `scoped_to`: the organisation of the API token the request came with, the
    only one allowed (and the default)."""
    if scoped_to is not None:
        if org and org != scoped_to.name:
            raise UploadRefused(
                f"this API token may upload only to organisation {scoped_to.name!r}; create a "
                "token for the other organisation",
                403,
                "org",
            )
        org = scoped_to.name
    if not org:
        try:
            return accounts.ensure_personal_organisation(user)
        except accounts.AccountError as exc:
            raise UploadRefused(str(exc), 403, "org") from None
    organisation = Organisation.objects.filter(name=org).first()
    if (
        organisation is None
        or not Membership.objects.filter(user=user, organisation=organisation).exists()
    ):
        raise UploadRefused(
            f"you are not a member of organisation {org!r}: you can publish only for your own "
            "organisations",
            403,
            "org",
        )
    return organisation


def clean_card(card: dict[str, Any] | None) -> dict[str, Any]:
    """The card fields of an upload: known names, strings (score: a number) within
    HUB_CARD_FIELD_MAX_BYTES each, model_name a Hub model id. Raises UploadRefused."""
    card = dict(card or {})
    unknown = sorted(str(k) for k in set(card) - CARD_KEYS)
    if unknown:
        names = safe_yaml.clip(str([safe_yaml.clip(k, 40) for k in unknown]), 200)
        raise UploadRefused(
            f"unknown card field(s) {names}; allowed: {sorted(CARD_KEYS)}", 400, "card"
        )
    card = {k: v for k, v in card.items() if v not in (None, "")}
    for key, value in card.items():
        problem = _card_field_problem(key, value)
        if problem:
            raise UploadRefused(f"{key} {problem}", 400, "card")
    check_card_links(card)
    return card


def _card_field_problem(key: str, value: Any) -> str | None:
    if key == "score":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, not a {type(value).__name__.replace('str', 'string')}"
        return None if math.isfinite(value) else "must be a finite number"
    if not isinstance(value, str):
        return f"must be a string, not a {type(value).__name__.replace('dict', 'mapping')}"
    size, cap = len(value.encode("utf-8")), safe_yaml.max_field_bytes()
    if size > cap:
        return f"is {size} bytes; a card field may hold at most {cap} (HUB_CARD_FIELD_MAX_BYTES)"
    if key == "model_name" and not basemodels.is_hub_id(value):
        return basemodels.not_a_hub_id(value)
    return None


# `github: @name` is a handle; anything with a scheme must be a web URL like `url`.
_SCHEME = re.compile(r"^[^/?#@]*:")


def check_card_links(card: dict[str, Any]) -> None:
    """Refuse a card whose `url` is not an absolute http(s) URL, or whose `github`/`twitter`
    names another scheme (javascript:, data:): they become links on the pages."""
    if "url" in card and not link_target(card["url"]):
        raise UploadRefused(web_url_problem("url", card["url"]), 400, "url")
    for key in ("github", "twitter"):
        value = card.get(key)
        if isinstance(value, str) and _SCHEME.match(value.strip()) and not is_web_url(value):
            raise UploadRefused(
                f"{key} must be a handle or an absolute http:// or https:// URL", 400, key
            )


def create_upload(
    *,
    user,
    archive: BinaryIO,
    task: str,
    subtask: str,
    type: str = "text_task",
    org: str | None = None,
    name: str | None = None,
    version: str | None = None,
    card: dict[str, Any] | None = None,
    filename: str = "",
    scoped_to: Organisation | None = None,
) -> Upload:
    """Store an upload (a zip of an adapter folder: a Django UploadedFile or any binary file
    object) and queue its validation; return it in status pending."""
    for field, value in (("task", task), ("subtask", subtask), ("type", type)):
        if not value or not str(value).strip():
            raise UploadRefused(f"{field} is required", 400, field)
    organisation = resolve_organisation(user, org, scoped_to)
    card = clean_card(card)
    refused = retention.quota_error(user)
    if refused:
        raise UploadRefused(refused, 429, "archive")
    # Read no more than the cap, or than the byte quota leaves: past either, nothing is stored.
    cap = settings.HUB_UPLOAD_MAX_BYTES
    quota_left = retention.quota_bytes_left(user)
    try:
        limit = cap if quota_left is None else min(cap, quota_left)
        with storage.spooled(archive, max_size=limit) as spool:
            blob = storage.store_path(spool)
            with transaction.atomic():
                # The purge of rejected archives may have deleted these bytes since: under the
                # blob's lock, store them again if so, then name them.
                retention.lock_blob(blob.key)
                if not storage.blob_exists(blob.key):
                    storage.store_path(spool)
                upload = Upload.objects.create(
                    user=user,
                    organisation=organisation,
                    type=type.strip(),
                    task=task.strip(),
                    subtask=subtask.strip(),
                    name=(name or "").strip(),
                    version=(version or "").strip(),
                    card=card,
                    archive_key=blob.key,
                    archive_sha256=blob.sha256,
                    archive_size=blob.size,
                    filename=(filename or "")[:255],
                )
    except storage.TooLargeError:
        if quota_left is not None and quota_left < cap:
            raise UploadRefused(
                retention.quota_error(user, quota_left + 1), 429, "archive"
            ) from None
        raise UploadRefused(
            f"the upload is larger than HUB_UPLOAD_MAX_BYTES ({cap} bytes)", 413, "archive"
        ) from None
    except storage.StorageWriteError as exc:
        log.error("upload refused, storage cannot write: %s", exc)
        raise UploadRefused(
            f"the hub cannot store uploads right now ({exc}); nothing was stored, try again later",
            507 if exc.full else 503,
            "archive",
        ) from None
    # After the commit (now, or when the caller's transaction commits).
    queue_validation(upload.pk)
    return upload


# -- validation ----------------------------------------------------------------------------------


def validate_upload(upload_id: int) -> Upload | None:
    """Run the checks and publish, or reject with the report. Safe to run twice, and at once: the
    claim (claims.py) lets one worker validate; a final upload is left as it is, and one whose
    worker died is validated again from the start once its claim expired."""
    upload = claims.claim_upload(upload_id)
    if upload is None:
        return Upload.objects.filter(pk=upload_id).first()
    try:
        with claims.leased(upload):
            return _validate_claimed(upload)
    except claims.ClaimLost as exc:
        log.warning("%s; its result is left to that worker", exc)
        return Upload.objects.filter(pk=upload_id).first()


def _validate_claimed(upload: Upload) -> Upload:
    if upload.attempts > MAX_ATTEMPTS:
        report = [checks.skipped(name) for name in checks.CHECK_NAMES]
        return claims.finish(
            upload,
            Upload.Status.REJECTED,
            report,
            f"validation was interrupted {MAX_ATTEMPTS} times (the worker died or ran out of "
            "time each time); rejected",
        )
    with tempfile.TemporaryDirectory(prefix=f"hub-upload-{upload.pk}-") as tmp:
        workdir = Path(tmp)
        archive = storage.fetch_to_path(upload.archive_key, workdir / "upload.zip")
        validation = checks.Validation(
            archive_path=Path(archive),
            workdir=workdir,
            type=upload.type,
            task=upload.task,
            subtask=upload.subtask,
            org=upload.organisation.name,
            name=upload.name or None,
            version=upload.version or None,
            card_extra=dict(upload.card),
        )
        try:
            ok, report = checks.run_checks(validation)
        except checks.ValidationDelayed as exc:
            log.warning("upload %s: validation delayed: %s", upload.pk, exc)
            return claims.release(
                upload,
                f"validation delayed: {exc}; the upload is validated again every "
                f"{settings.HUB_UPLOAD_SWEEP_SECONDS} s until it can be",
            )
        if not ok:
            failed = next(entry for entry in report if entry["ok"] is False)
            return claims.finish(
                upload,
                Upload.Status.REJECTED,
                report,
                f"{failed['name']}: {failed['message']}",
                name=validation.name or upload.name,
            )
        started = time.perf_counter()
        try:
            # The claim is checked and the row locked in the transaction that publishes: a worker
            # that lost its claim publishes nothing.
            with transaction.atomic():
                claims.hold_claim(upload)
                version, committed = publish_validated(upload, validation)
                adapter = version.adapter
                message = (
                    f"published {adapter.unique_id} version {version.version} "
                    f"({adapter.identifier})"
                )
                if committed is not None:
                    message += (
                        f"; card {card_path(adapter)} committed on branch {committed.branch} "
                        f"at {committed.commit[:12]}"
                    )
                report.append(checks.report_entry("publish", True, message, started))
                return claims.finish(
                    upload,
                    Upload.Status.PUBLISHED,
                    report,
                    message,
                    name=adapter.name,
                    version=version.version,
                    adapter_version=version,
                    git_branch=committed.branch if committed else "",
                    git_commit=committed.commit if committed else "",
                )
        except hubrepo.HubRepositoryBusy as exc:
            log.warning("upload %s: publishing delayed: %s", upload.pk, exc)
            return claims.release(
                upload,
                f"publishing delayed: {exc}; the upload passed its checks and is tried again "
                f"every {settings.HUB_UPLOAD_SWEEP_SECONDS} s",
            )
        except (PublishError, hubrepo.HubRepositoryError) as exc:
            report.append(checks.report_entry("publish", False, str(exc), started))
            return claims.finish(upload, Upload.Status.REJECTED, report, f"publish: {exc}")
        except storage.StorageWriteError as exc:
            # Nothing was published (the transaction rolled back before the card's commit); the
            # upload is fine, the hub is not: validated again once the storage takes writes.
            log.error("upload %s: publishing delayed: %s", upload.pk, exc)
            return claims.release(
                upload,
                f"publishing delayed: {exc}; the upload passed its checks and is tried again "
                f"every {settings.HUB_UPLOAD_SWEEP_SECONDS} s",
            )


def publish_validated(upload: Upload, v: checks.Validation):
    """Storage and catalogue in one transaction: the rows are the published card (the adapter's
    origin says so; no sync of the Hub repository rewrites or withdraws it). With the git export
    on (HUB_PUBLISH_REPO), the card is committed in the same transaction: if git fails, no row
    says the adapter exists. Returns (version, the commit or None)."""
    extra = dict(upload.card)
    extra.setdefault("author", upload.organisation.name)
    if upload.user and upload.user.email:
        extra.setdefault("email", upload.user.email)
    with transaction.atomic():
        version = publish_adapter_folder(
            v.folder,
            task=upload.task,
            subtask=upload.subtask,
            org=upload.organisation.name,
            name=v.name,
            version=upload.version or None,
            type=upload.type,
            card_extra=extra,
        )
        adapter = Adapter.objects.select_for_update().get(pk=version.adapter_id)
        repo = hubrepo.publish_repository()
        if repo is None:
            return version, None
        user = upload.user
        author = (
            (user.username, user.email or f"{user.username}@users.adapterhub.invalid")
            if user
            else ("AdapterHub", "hub@adapterhub.invalid")
        )
        committed = hubrepo.commit_card(
            repo,
            hubrepo.publish_branch(upload.pk),
            card_path(adapter),
            render_card_yaml(adapter),
            f"Publish {adapter.unique_id} version {version.version} (upload {upload.pk})",
            author,
        )
    return version, committed


# -- moderation and recovery ---------------------------------------------------------------------


def revalidate_upload(upload: Upload) -> None:
    """A moderator's re-run: back to pending, validated again (not once its archive was purged)."""
    if upload.archive_purged_at is not None:
        raise UploadRefused(
            f"upload {upload.pk}: its archive was deleted after the retention period "
            "(HUB_REJECTED_RETENTION_DAYS); it cannot be validated again",
            409,
        )
    with transaction.atomic():
        Upload.objects.filter(pk=upload.pk).update(
            status=Upload.Status.PENDING,
            attempts=0,
            report=[],
            message="",
            finished_at=None,
            queued_at=None,
            claim_token="",
            lease_expires_at=None,
        )
        queue_validation(upload.pk)


def yank_adapter(adapter: Adapter) -> None:
    """Unpublish: hidden from search, still downloadable by exact version (with a warning)."""
    from hub_server.catalog.signals import catalog_changed

    if adapter.status != Adapter.Status.YANKED:
        adapter.status = Adapter.Status.YANKED
        adapter.save(update_fields=["status", "updated_at"])
        transaction.on_commit(lambda: catalog_changed.send(sender=Adapter, adapter=adapter))


def restore_adapter(adapter: Adapter) -> None:
    from hub_server.catalog.signals import catalog_changed

    if adapter.status == Adapter.Status.YANKED:
        adapter.status = Adapter.Status.ACTIVE
        adapter.save(update_fields=["status", "updated_at"])
        transaction.on_commit(lambda: catalog_changed.send(sender=Adapter, adapter=adapter))


def delete_upload(upload: Upload) -> None:
    """Delete the upload record; its stored bytes stay (content-addressed, maybe shared)."""
    upload.delete()


def default_user(username: str):
    return accounts.get_or_create_user(username)
