"""The Hugging Face Hub compatible subset under /hf/ (docs: ../shared/spec/hf-protocol.md).

A hosted adapter `org/name` is a model repo. Every hosted version is a revision named after the
version, `main` is the default version, and each revision has a 40-hex commit sha derived from
what it serves (the archive's sha256 and its README), stored on the version when published, so
`(sha, path) -> bytes` never changes. A revision's files are the archive's members (both weight
formats) plus a README.md: the one a client pushed, else a model card generated from the catalogue
at publish time (both stored with the version). Weights are presented as LFS files (ETag = sha256),
other files as regular git blobs (ETag = W/"<git blob id>"). No Xet headers or fields, ever.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Concat
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from hub_server.api.downloads import Body, content_disposition, count_download, serve_body
from hub_server.catalog.hf_revision import LIBRARY_NAME, card_metadata, freeze_revision, tags_of
from hub_server.catalog.models import Adapter, AdapterVersion, VersionFile

LFS_SUFFIXES = (".bin", ".safetensors")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
MAX_PAGE = 1000
# The query parameters `list_models` reads.
LIST_PARAMS = (
    "search",
    "author",
    "filter",
    "sort",
    "direction",
    "limit",
    "cursor",
    "full",
    "cardData",
)
# One download per snapshot: the file every adapter load fetches exactly once.
COUNTED_FILE = "adapter_config.json"
CONTENT_TYPES = {".json": "application/json", ".md": "text/markdown; charset=utf-8"}


class HfError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit

    def response(self) -> JsonResponse:
        response = JsonResponse({"error": self.message}, status=self.status)
        if self.code:
            response["X-Error-Code"] = self.code
        response["X-Error-Message"] = self.message.encode("ascii", "replace").decode()
        if self.commit:
            response["X-Repo-Commit"] = self.commit
        return response


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RepoFile:
    path: str
    size: int
    sha256: str
    git_oid: str
    key: str = ""
    data: bytes | None = None

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def lfs_pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {self.size}\n"
        ).encode()

    @property
    def oid(self) -> str:
        """The git blob id in the repo: of the LFS pointer for LFS files, as git stores them."""
        return git_blob_oid(self.lfs_pointer) if self.lfs else self.git_oid

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"' if self.lfs else f'W/"{self.git_oid}"'

    def lfs_info(self, sha_key: str) -> dict:
        return {sha_key: self.sha256, "size": self.size, "pointerSize": len(self.lfs_pointer)}

    def body(self) -> Body:
        return Body(size=self.size, key=self.key, data=self.data)


@dataclass
class Revision:
    adapter: Adapter
    version: AdapterVersion
    sha: str
    card: dict
    files: list[RepoFile] = field(default_factory=list)

    @property
    def repo_id(self) -> str:
        return f"{self.adapter.org}/{self.adapter.name}"

    def file(self, path: str) -> RepoFile | None:
        return next((f for f in self.files if f.path == path), None)


# -- lookups --------------------------------------------------------------------------------------


def hosted_versions(adapter: Adapter) -> list[AdapterVersion]:
    versions = (
        adapter.versions.filter(file_status=AdapterVersion.FileStatus.HOSTED)
        .exclude(storage_key="")
        .prefetch_related("files")
        .order_by("position", "id")
    )
    return [v for v in versions if v.files.all()]


def find_repo(org: str, name: str) -> tuple[Adapter, list[AdapterVersion]]:
    adapter = (
        Adapter.objects.select_related("task", "subtask", "architecture")
        .exclude(status=Adapter.Status.WITHDRAWN)
        .filter(org=org, name=name)
        .first()
    )
    versions = hosted_versions(adapter) if adapter is not None else []
    if not versions:
        raise HfError(404, "RepoNotFound", f"Repository Not Found for url: {org}/{name}.")
    return adapter, versions


def build_revision(adapter: Adapter, version: AdapterVersion) -> Revision:
    freeze_revision(adapter, version)
    metadata = card_metadata(adapter)
    readme = version.hf_readme.encode("utf-8")
    readme_sha = hashlib.sha256(readme).hexdigest()
    files = [
        RepoFile(f.path, f.size, f.sha256, f.git_oid, key=f.storage_key)
        for f in version.files.all()
        if f.path != "README.md"
    ]
    files.append(RepoFile("README.md", len(readme), readme_sha, git_blob_oid(readme), data=readme))
    files.sort(key=lambda f: f.path)
    return Revision(adapter, version, version.hf_sha, metadata, files)


def resolve_revision(org: str, name: str, rev: str) -> Revision:
    adapter, versions = find_repo(org, name)
    if rev == "main":
        if adapter.status == Adapter.Status.YANKED:
            raise HfError(
                404,
                "RevisionNotFound",
                f"{org}/{name} was yanked: only an exact version can be downloaded.",
            )
        chosen = next((v for v in versions if v.version == adapter.default_version), None)
        return build_revision(adapter, chosen or versions[-1])
    named = next((v for v in versions if v.version == rev), None)
    if named is not None:
        return build_revision(adapter, named)
    if SHA_RE.match(rev):
        for version in versions:
            freeze_revision(adapter, version)
            if version.hf_sha == rev:
                return build_revision(adapter, version)
    raise HfError(404, "RevisionNotFound", f"Invalid rev id: {rev}")


# -- JSON shapes ------------------------------------------------------------------------------------


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def object_id(repo_id: str) -> str:
    return hashlib.sha1(repo_id.encode()).hexdigest()[:24]


def summary(adapter: Adapter) -> dict:
    repo_id = f"{adapter.org}/{adapter.name}"
    return {
        "_id": object_id(repo_id),
        "id": repo_id,
        "modelId": repo_id,
        "author": adapter.org,
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": adapter.downloads,
        "likes": 0,
        "library_name": LIBRARY_NAME,
        "tags": tags_of(adapter),
        "createdAt": iso(adapter.created_at),
    }


def model_json(revision: Revision, blobs: bool) -> dict:
    data = summary(revision.adapter)
    siblings = []
    for f in revision.files:
        sibling: dict = {"rfilename": f.path}
        if blobs:
            sibling["size"] = f.size
            sibling["blobId"] = f.oid
            if f.lfs:
                sibling["lfs"] = f.lfs_info("sha256")
        siblings.append(sibling)
    data.update(
        {
            "sha": revision.sha,
            "lastModified": iso(revision.version.created_at),
            "cardData": revision.card,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in revision.files),
        }
    )
    return data


def flag(request: HttpRequest, name: str) -> bool:
    return (request.GET.get(name) or "").strip().lower() in {"1", "true", "yes"}


def absolute(request: HttpRequest, path_and_query: str) -> str:
    base = settings.HUB_PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")
    return base + path_and_query


# -- views ------------------------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD"])
def model_info(request: HttpRequest, org: str, name: str, rev: str = "main") -> HttpResponse:
    """E1/E2: GET /api/models/{org}/{name}[/revision/{rev}][?blobs=true]."""
    try:
        revision = resolve_revision(org, name, rev)
    except HfError as exc:
        return exc.response()
    data = model_json(revision, blobs=flag(request, "blobs"))
    expand = request.GET.getlist("expand")
    if expand:
        data = {k: v for k, v in data.items() if k in {"_id", "id", *expand}}
    return JsonResponse(data)


@require_http_methods(["GET", "HEAD"])
def tree(request: HttpRequest, org: str, name: str, rev: str, folder: str = "") -> HttpResponse:
    """E3: GET /api/models/{org}/{name}/tree/{rev}[/{folder}] (the repos are flat)."""
    try:
        revision = resolve_revision(org, name, rev)
    except HfError as exc:
        return exc.response()
    if folder.strip("/"):
        return HfError(
            404, "EntryNotFound", f"{folder} does not exist on {rev}", revision.sha
        ).response()
    entries = []
    for f in revision.files:
        entry = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
        if f.lfs:
            entry["lfs"] = f.lfs_info("oid")
        entries.append(entry)
    return JsonResponse(entries, safe=False)


@require_http_methods(["GET", "HEAD"])
def resolve(request: HttpRequest, org: str, name: str, rev: str, path: str) -> HttpResponse:
    """E5/E6: HEAD/GET /{org}/{name}/resolve/{rev}/{path}: the bytes, 200 (206 on Range)."""
    try:
        revision = resolve_revision(org, name, rev)
    except HfError as exc:
        return exc.response()
    repo_file = revision.file(path)
    if repo_file is None:
        return HfError(
            404, "EntryNotFound", f"{path} does not exist on {rev} of {org}/{name}", revision.sha
        ).response()
    version = revision.version
    on_complete = (lambda: count_download(version)) if path == COUNTED_FILE else None
    suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ""
    return serve_body(
        request,
        repo_file.body(),
        etag=repo_file.etag,
        content_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
        headers={
            "X-Repo-Commit": revision.sha,
            "Content-Disposition": content_disposition(path.rsplit("/", 1)[-1], "inline"),
        },
        on_complete=on_complete,
    )


SORTS = {
    "downloads": ("downloads",),
    "likes": ("downloads",),
    "trending_score": ("downloads",),
    "trendingScore": ("downloads",),
    "lastModified": ("updated_at",),
    "last_modified": ("updated_at",),
    "createdAt": ("created_at",),
    "created_at": ("created_at",),
    "id": ("org", "name"),
    "modelId": ("org", "name"),
}


def _filter_q(value: str) -> Q:
    """One `filter=` value (a tag) as a condition on adapters."""
    if value in (LIBRARY_NAME, "adapters"):
        return Q()
    if value.startswith("adapterhub:"):
        task, _, subtask = value.removeprefix("adapterhub:").partition("/")
        q = Q(task__task=task)
        return q & Q(subtask__subtask=subtask) if subtask else q
    if value.startswith("base_model:"):
        return Q(model_name=value.split(":")[-1])
    if value.startswith("dataset:"):
        return Q(subtask__hf_datasets_id=value.removeprefix("dataset:"))
    return Q(model_type=value) | Q(model_name=value)


@require_http_methods(["GET", "HEAD"])
def list_models(request: HttpRequest) -> HttpResponse:
    """E4: GET /api/models?search=&author=&filter=&sort=&direction=&limit= (Link pagination)."""
    hosted = VersionFile.objects.filter(
        version__adapter=OuterRef("pk"), version__file_status=AdapterVersion.FileStatus.HOSTED
    )
    adapters = (
        Adapter.objects.filter(status=Adapter.Status.ACTIVE)
        .filter(Exists(hosted))
        .select_related("task", "subtask", "architecture")
    )
    search = (request.GET.get("search") or "").strip()
    if search:
        adapters = adapters.annotate(repo_id=Concat(F("org"), Value("/"), F("name"))).filter(
            repo_id__icontains=search
        )
    if request.GET.get("author"):
        adapters = adapters.filter(org=request.GET["author"])
    for value in request.GET.getlist("filter"):
        for part in value.split(","):
            if part.strip():
                adapters = adapters.filter(_filter_q(part.strip()))
    sort = request.GET.get("sort") or "downloads"
    fields = SORTS.get(sort)
    if fields is None:
        return JsonResponse({"error": f"unknown sort {sort!r}; one of {sorted(SORTS)}"}, status=400)
    direction = request.GET.get("direction")
    descending = direction != "1" if direction else fields != ("org", "name")
    prefix = "-" if descending else ""
    adapters = adapters.order_by(*[prefix + f for f in fields], prefix + "id")
    try:
        limit = int(request.GET["limit"]) if request.GET.get("limit") else MAX_PAGE
        offset = int(request.GET.get("cursor") or 0)
    except ValueError:
        return JsonResponse({"error": "limit and cursor must be integers"}, status=400)
    page_size = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    page = list(adapters[offset : offset + page_size + 1])
    full = flag(request, "full")
    with_card = full or flag(request, "cardData")
    items = []
    for adapter in page[:page_size]:
        item = summary(adapter)
        if with_card:
            item["cardData"] = card_metadata(adapter)
        if full:
            versions = hosted_versions(adapter)
            if not versions:
                continue
            default = next(
                (v for v in versions if v.version == adapter.default_version), versions[-1]
            )
            revision = build_revision(adapter, default)
            item.update(
                sha=revision.sha,
                lastModified=iso(default.created_at),
                siblings=[{"rfilename": f.path} for f in revision.files],
            )
        items.append(item)
    response = JsonResponse(items, safe=False)
    if len(page) > page_size:
        params = request.GET.copy()
        params["cursor"] = str(offset + page_size)
        response["Link"] = (
            f'<{absolute(request, request.path + "?" + params.urlencode())}>; rel="next"'
        )
    return response


@require_http_methods(["GET", "HEAD"])
def whoami(request: HttpRequest) -> HttpResponse:
    """The user of a hub API token, in the shape huggingface_hub's `whoami()` reads."""
    from hub_server.accounts.services import TokenExpired, authenticate_secret

    header = request.headers.get("Authorization", "")
    if not header:
        return JsonResponse({"error": "Authorization header is missing: pass a token"}, status=401)
    scheme, _, secret = header.partition(" ")
    try:
        token = authenticate_secret(secret.strip()) if scheme.lower() == "bearer" else None
    except TokenExpired as exc:
        return JsonResponse({"error": str(exc)}, status=401)
    if token is None:
        return JsonResponse({"error": "Invalid credentials in Authorization header"}, status=401)
    user = token.user
    orgs = [{"type": "org", "name": org.name} for org in user.organisations.order_by("name")]
    return JsonResponse(
        {
            "type": "user",
            "name": user.username,
            "fullname": user.get_full_name() or user.username,
            "email": user.email or None,
            "orgs": orgs,
            "auth": {
                "type": "access_token",
                "accessToken": {"displayName": token.name or "api token", "role": token.scope},
            },
        }
    )


def agent_harnesses(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"standardEnvVars": [], "harnesses": {}})


def not_found(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    return JsonResponse({"error": f"{request.path} is not part of this hub's /hf/ API"}, status=404)
