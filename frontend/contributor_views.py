"""Contributor pages: tokens, uploads and one's adapters. Never cached; every write goes through
hub_server.accounts.services or hub_server.uploads.services."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from frontend.forms import TokenForm, UploadForm
from hub_server.accounts import selectors as account_selectors
from hub_server.accounts import services as accounts
from hub_server.accounts.models import ApiToken
from hub_server.catalog.models import Adapter
from hub_server.uploads import selectors as upload_selectors
from hub_server.uploads import services as uploads
from hub_server.uploads.models import Upload

NEW_TOKEN_KEY = "frontend:new-token"


def _private(response):
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    orgs = account_selectors.organisations_of(request.user).values_list("name", flat=True)
    form = TokenForm(request.POST or None, organisations=list(orgs))
    if request.method == "POST" and form.is_valid():
        _, secret = accounts.create_token(
            request.user,
            name=form.cleaned_data["name"],
            scope=form.cleaned_data["scope"],
            expires_at=form.expires_at(),
            organisation=form.cleaned_data["organisation"] or None,
        )
        # Post/redirect/get: the secret rides in the session to the next page view, once.
        request.session[NEW_TOKEN_KEY] = secret
        return redirect("tokens")
    secret = request.session.pop(NEW_TOKEN_KEY, None)
    return _private(
        render(
            request,
            "frontend/accounts/tokens.html",
            {
                "form": form,
                "secret": secret,
                "tokens": account_selectors.tokens_of(request.user),
                "now": timezone.now(),
            },
        )
    )


@login_required
@require_POST
def revoke_token(request, token_id: int):
    try:
        token = accounts.revoke_token(request.user, token_id)
    except ApiToken.DoesNotExist:
        raise Http404("No such token.") from None
    messages.success(request, f"Token {token.prefix}… revoked. Clients using it are refused now.")
    return redirect("tokens")


@login_required
def my_adapters(request):
    orgs = list(account_selectors.organisations_of(request.user).values_list("name", flat=True))
    adapters = list(
        Adapter.objects.filter(org__in=orgs)
        .exclude(status=Adapter.Status.WITHDRAWN)
        .order_by("-updated_at", "id")
        .values(
            "org",
            "name",
            "status",
            "task__task",
            "subtask__subtask",
            "model_name",
            "architecture__name",
            "default_version",
            "downloads",
            "updated_at",
        )[:200]
    )
    recent = list(
        upload_selectors.uploads_visible_to(request.user)
        .filter(user=request.user)
        .order_by("-created_at", "-id")[:20]
    )
    return _private(
        render(
            request,
            "frontend/accounts/my_adapters.html",
            {"orgs": orgs, "adapters": adapters, "uploads": recent},
        )
    )


def _wants_json(request) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest"


@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    orgs = list(account_selectors.organisations_of(request.user).values_list("name", flat=True))
    form = UploadForm(request.POST or None, request.FILES or None, organisations=orgs)
    if request.method == "POST":
        if form.is_valid():
            type_id, task, subtask = form.cleaned_data["dataset"]
            archive = form.cleaned_data["archive"]
            try:
                created = uploads.create_upload(
                    user=request.user,
                    archive=archive,
                    type=type_id,
                    task=task,
                    subtask=subtask,
                    org=form.cleaned_data["org"] or None,
                    name=form.cleaned_data["name"] or None,
                    version=form.cleaned_data["version"] or None,
                    card=form.card(),
                    filename=archive.name,
                )
            except uploads.UploadRefused as exc:
                field = exc.field if exc.field in form.fields else None
                form.add_error(field, str(exc))
            else:
                page = reverse("upload-status", args=[created.pk])
                if _wants_json(request):
                    return JsonResponse(
                        {
                            "ok": True,
                            "id": created.pk,
                            "url": page,
                            "status_url": reverse("upload-status-json", args=[created.pk]),
                        },
                        status=202,
                    )
                return redirect(page)
        if _wants_json(request):
            # 200 like the re-rendered form of the plain POST: the form answered, with errors.
            return JsonResponse(
                {
                    "ok": False,
                    "detail": "The upload was refused.",
                    "errors": form.errors.get_json_data(),
                }
            )
    return _private(render(request, "frontend/upload.html", {"form": form}))


def _upload_or_404(request, upload_id: int) -> Upload:
    found = upload_selectors.upload_for(request.user, upload_id)
    if found is None:
        raise Http404("No such upload.")
    return found


def upload_state(item: Upload) -> dict:
    """What the status page shows and polls: status, message, the report and, once published,
    the adapter page and the version's download."""
    from hub_server.uploads import checks

    report = list(item.report or [])
    done = {entry["name"] for entry in report}
    pending = [
        {"name": name, "ok": None, "message": "waiting", "duration_ms": None, "pending": True}
        for name in checks.CHECK_NAMES
        if name not in done and item.status not in Upload.FINAL
    ]
    state = {
        "id": item.pk,
        "status": item.status,
        "final": item.status in Upload.FINAL,
        "delayed": item.validation_delayed,
        "message": item.message,
        "report": report + pending,
        "adapter_url": "",
        "download_url": "",
        "adapter": "",
    }
    version = item.adapter_version
    if item.status == Upload.Status.PUBLISHED and version is not None:
        adapter = version.adapter
        state["adapter"] = adapter.unique_id
        state["adapter_url"] = reverse("adapter-page", args=[adapter.org, adapter.name])
        state["download_url"] = reverse(
            "adapter-version-download", args=[adapter.org, adapter.name, version.version]
        )
    return state


@login_required
def upload_status(request, upload_id: int):
    item = _upload_or_404(request, upload_id)
    return _private(
        render(
            request,
            "frontend/upload_status.html",
            {"upload": item, "state": upload_state(item)},
        )
    )


@login_required
def upload_status_json(request, upload_id: int):
    return _private(JsonResponse(upload_state(_upload_or_404(request, upload_id))))
