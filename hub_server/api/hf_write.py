"""The write side of /hf/: what huggingface_hub sends for `create_repo`, `upload_folder`,
`create_commit` (and so adapters' `push_adapter_to_hub`), and the commits listing.

Auth: an API token of this hub with the write scope, sent as the HF token (`Authorization: Bearer`).
A commit becomes an upload (hub_server.uploads.hf_commits) that the worker validates like a CLI
upload; the commit call answers when the validation ends (up to HUB_HF_COMMIT_WAIT seconds).
Errors carry `{"error": ...}` and `X-Error-Message`, which huggingface_hub shows to the user.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from hub_server.api.hf import (
    HfError,
    absolute,
    build_revision,
    find_repo,
    iso,
    object_id,
    resolve_revision,
)
from hub_server.catalog import cache
from hub_server.uploads import hf_commits
from hub_server.uploads.models import Upload
from hub_server.uploads.publishing import NAME_RE
from hub_server.uploads.services import UploadRefused, resolve_organisation

BAD_TOKEN = "Invalid credentials in Authorization header"


def _error(status: int, message: str, code: str | None = None) -> JsonResponse:
    return HfError(status, code, message).response()


def _token(request: HttpRequest):
    """The write-scoped API token of the request, or an error response."""
    from hub_server.accounts.services import TokenExpired, authenticate_secret

    header = request.headers.get("Authorization", "")
    if not header:
        return None, _error(
            401,
            "Authorization header is missing: pass an AdapterHub API token with the write scope "
            "as the HF token (HF_TOKEN or token=)",
        )
    scheme, _, secret = header.partition(" ")
    try:
        token = authenticate_secret(secret.strip()) if scheme.lower() == "bearer" else None
    except TokenExpired as exc:
        return None, _error(401, str(exc))
    if token is None:
        return None, _error(401, BAD_TOKEN)
    if not token.can_write:
        return None, _error(
            403, "This API token is read-only; create a token with the write scope."
        )
    return token, None


def _refused(exc: UploadRefused) -> JsonResponse:
    return _error(exc.status, str(exc))


def _hosted(org: str, name: str) -> bool:
    try:
        find_repo(org, name)
    except HfError:
        return False
    return True


@csrf_exempt
@require_http_methods(["POST"])
def create_repo(request: HttpRequest) -> HttpResponse:
    """POST /api/repos/create {name, organization, type, private}: 200 {url}, or 409 when the repo
    exists (huggingface_hub's `exist_ok=True` accepts a 409). A repo is listed once its first
    commit is published."""
    token, failed = _token(request)
    if failed:
        return failed
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "the body must be a JSON object")
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return _error(400, "the body must be a JSON object with the repo's name")
    if (payload.get("type") or "model") != "model":
        return _error(400, "this hub hosts model repos only (adapters); not " + payload["type"])
    org, _, name = payload["name"].rpartition("/")
    org = payload.get("organization") or org or None
    try:
        organisation = resolve_organisation(token.user, org, token.organisation)
    except UploadRefused as exc:
        return _refused(exc)
    if not NAME_RE.match(name):
        return _error(400, f"repo name {name!r}: use letters, digits, '-', '_' or '.'")
    repo_id = f"{organisation.name}/{name}"
    # `/models/` in the path: huggingface_hub 0.x parses the URL back into a repo id and takes the
    # segment before the namespace as the repo type (an endpoint with a path, /hf, confuses it).
    url = absolute(request, f"/hf/models/{repo_id}")
    if _hosted(organisation.name, name):
        return JsonResponse(
            {"error": "You already created this model repo", "url": url}, status=409
        )
    return JsonResponse({"url": url, "name": repo_id, "id": object_id(repo_id)})


def _writable(request: HttpRequest, org: str, rev: str):
    token, failed = _token(request)
    if failed:
        return None, failed
    if rev != "main":
        return None, _error(
            400,
            f"commits go to main only (got revision {rev!r}): each published commit is a new "
            "version, listed as a revision of its own",
        )
    if request.GET.get("create_pr") not in (None, "", "0", "false", "False"):
        return None, _error(400, "pull requests are not supported: commit to main")
    try:
        resolve_organisation(token.user, org, token.organisation)
    except UploadRefused as exc:
        return None, _refused(exc)
    return token, None


@csrf_exempt
@require_http_methods(["POST"])
def preupload(request: HttpRequest, org: str, name: str, rev: str) -> HttpResponse:
    """POST /api/models/{repo}/preupload/{rev} {files: [{path, sample, size}]}: every file in the
    inline ("regular") mode, so no client needs LFS or Xet; `oid` is the git blob id of the file
    now on main, which lets the client leave unchanged files out of the commit."""
    from django.conf import settings

    token, failed = _writable(request, org, rev)
    if failed:
        return failed
    try:
        files = json.loads(request.body or b"{}").get("files")
    except (ValueError, AttributeError):
        files = None
    if not isinstance(files, list):
        return _error(400, "the body must be a JSON object with a `files` list")
    version = hf_commits.default_version(hf_commits.published_adapter(org, name))
    oids = {f.path: f.git_oid for f in version.files.all()} if version else {}
    answer = []
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return _error(400, "each file needs a path")
        size = entry.get("size") or 0
        if isinstance(size, int) and size > settings.HUB_UPLOAD_MAX_BYTES:
            return _error(
                413,
                f"{entry['path']} is {size} bytes, more than an upload may hold "
                f"(HUB_UPLOAD_MAX_BYTES = {settings.HUB_UPLOAD_MAX_BYTES})",
            )
        answer.append(
            {
                "path": entry["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": oids.get(entry["path"]),
            }
        )
    return JsonResponse({"files": answer, "commitOid": None})


def _status_page(request: HttpRequest, upload: Upload) -> str:
    return absolute(request, f"/uploads/{upload.pk}/")


@csrf_exempt
@require_http_methods(["POST"])
def commit(request: HttpRequest, org: str, name: str, rev: str) -> HttpResponse:
    """POST /api/models/{repo}/commit/main (NDJSON): validated as an upload; 200 {commitOid,
    commitUrl} once published, 422 naming the failed check, 409 while it still runs."""
    token, failed = _writable(request, org, rev)
    if failed:
        return failed
    try:
        parsed = hf_commits.parse_commit(request.body)
        upload = hf_commits.commit_upload(
            user=token.user, token=token, org=org, name=name, commit=parsed
        )
    except UploadRefused as exc:
        return _refused(exc)
    upload = hf_commits.wait_for(upload)
    page = _status_page(request, upload)
    if upload.status == Upload.Status.REJECTED:
        failed_check = next((e for e in upload.report if e.get("ok") is False), None)
        check = failed_check["name"] if failed_check else "validation"
        detail = failed_check["message"] if failed_check else upload.message
        return _error(
            422,
            f"Validation failed at check '{check}': {detail} (report: {page})",
            "ValidationFailed",
        )
    if upload.status != Upload.Status.PUBLISHED:
        return _error(
            409,
            f"validation of upload {upload.pk} is still running ({upload.status}); watch it at "
            f"{page}. The commit is published when it passes.",
            "ValidationPending",
        )
    version = upload.adapter_version
    # The worker already advanced the catalogue's generation in the database: read it now rather
    # than within the recheck window, so this process's /hf/ reads show the commit to its author.
    cache.clock.expire()
    revision = build_revision(version.adapter, version)
    return JsonResponse(
        {
            "success": True,
            "commitOid": revision.sha,
            "commitUrl": absolute(request, f"/hf/models/{org}/{name}/commit/{revision.sha}"),
            "commitMessage": parsed.summary,
            "pullRequestUrl": None,
            "version": version.version,
            "statusUrl": page,
        }
    )


@require_http_methods(["GET", "HEAD"])
def commits(request: HttpRequest, org: str, name: str, rev: str = "main") -> HttpResponse:
    """GET /api/models/{repo}/commits/{rev}: one commit per hosted version, newest first, from the
    revision's version back to the first."""
    try:
        adapter, versions = find_repo(org, name)
        at = resolve_revision(org, name, rev).version
    except HfError as exc:
        return exc.response()
    history = [v for v in versions if (v.position, v.id) <= (at.position, at.id)]
    items = []
    for version in reversed(history):
        revision = build_revision(adapter, version)
        uploader = version.uploads.filter(user__isnull=False).select_related("user").first()
        title = f"Version {version.version}"
        items.append(
            {
                "id": revision.sha,
                "title": title,
                "message": version.description or "",
                "authors": [{"user": uploader.user.username if uploader else adapter.org}],
                "date": iso(version.created_at),
            }
        )
    return JsonResponse(items, safe=False)


@csrf_exempt
@require_http_methods(["POST"])
def validate_yaml(request: HttpRequest) -> HttpResponse:
    """POST /api/validate-yaml {content, repoType}: huggingface_hub sends a README.md here before
    uploading it; 400 with `errors` stops the upload, `warnings` are shown to the user."""
    try:
        content = json.loads(request.body or b"{}").get("content")
    except (ValueError, AttributeError):
        content = None
    if not isinstance(content, str):
        return JsonResponse({"errors": [{"message": "content must be a string"}]}, status=400)
    try:
        card = hf_commits.read_card(content.encode("utf-8"))
    except UploadRefused as exc:
        return JsonResponse({"errors": [{"message": str(exc)}], "warnings": []}, status=400)
    warnings = []
    if not (card.task and card.subtask):
        warnings.append(
            {"message": f"no task and subtask in README.md: {hf_commits.HOW_TO_GIVE_TASK}"}
        )
    return JsonResponse({"errors": [], "warnings": warnings})
