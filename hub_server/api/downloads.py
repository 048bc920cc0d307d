"""Serving hosted files: the archive download of the REST API, and the byte-serving helpers that
/hf/ (hf.py) shares.

Bodies are streamed from storage in chunks (never read whole), with ETag/If-None-Match (304),
single-range requests (206/416). On S3 a GET is answered with a redirect to a presigned URL of
the object (storage.presigned_url); with HUB_ACCEL_REDIRECT_PREFIX set, nginx gets the hand-off by
X-Accel-Redirect. A download is counted once per completed full GET: when the last chunk of a 200
body has been handed to the server (a HEAD, a 304, a range request or an aborted body count
nothing); on S3 or behind nginx, at the redirect or hand-off of a GET without Range. See docs/storage.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.http import require_http_methods

from hub_server import storage
from hub_server.catalog.hf_revision import archive_sha256
from hub_server.catalog.models import Adapter, AdapterVersion

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
STREAM_CHUNK = 256 * 1024


class Unsatisfiable(Exception):
    pass


@dataclass
class Body:
    """What to send: a stored blob (by key) or bytes made on the fly (e.g. a generated README)."""

    size: int
    key: str = ""
    data: bytes | None = None

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data[start : end + 1]
            return
        yield from storage.iter_blob(self.key, start, end, STREAM_CHUNK)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for one satisfiable range; None to serve the whole body.

    Several ranges or bad syntax are ignored (the whole body is served, as RFC 9110 allows);
    a range that starts past the end raises Unsatisfiable (416).
    """
    if not header:
        return None
    match = RANGE_RE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - suffix), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable()
    end = size - 1 if last == "" else int(last)
    return start, min(end, size - 1)


def etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison of If-None-Match against our ETag."""
    if not header:
        return False
    ours = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == ours:
            return True
    return False


def content_disposition(filename: str, kind: str = "attachment") -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def serve_body(
    request: HttpRequest,
    body: Body,
    *,
    etag: str,
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
    on_complete: Callable[[], None] | None = None,
) -> HttpResponse:
    """The response for GET/HEAD of a body: 200, 206, 304 or 416, streamed for GET.

    `on_complete` runs once a full 200 GET body was handed over entirely (the download count).
    """
    base = {"ETag": etag, "Accept-Ranges": "bytes", **(headers or {})}
    if etag_matches(request.headers.get("If-None-Match"), etag):
        response = HttpResponse(status=304)
        for name, value in base.items():
            response[name] = value
        return response
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range and if_range.strip() != etag:
        range_header = None  # the client's partial copy is of other bytes: send them all
    try:
        byte_range = parse_range(range_header, body.size)
    except Unsatisfiable:
        response = JsonResponse(
            {"detail": f"range {range_header} is outside the file ({body.size} bytes)"},
            status=416,
        )
        response["Content-Range"] = f"bytes */{body.size}"
        response["Accept-Ranges"] = "bytes"
        return response
    start, end = byte_range if byte_range else (0, body.size - 1)
    length = end - start + 1 if body.size else 0
    status = 206 if byte_range else 200

    if body.key and request.method == "GET":
        location = storage.presigned_url(
            body.key, content_type=content_type, disposition=base.get("Content-Disposition")
        )
        if location:
            # S3 serves the bytes (and the Range, which the client sends again there). The
            # metadata a Hugging Face client reads stays ours: X-Linked-* name the file, not
            # the redirect; the URL expires, so no cache keeps this answer.
            response = HttpResponseRedirect(location)
            for name, value in base.items():
                response[name] = value
            response["X-Linked-Etag"] = etag
            response["X-Linked-Size"] = str(body.size)
            response["Cache-Control"] = "no-store"
            if on_complete is not None and range_header is None:
                on_complete()
            return response

    accel = settings.HUB_ACCEL_REDIRECT_PREFIX
    if accel and body.key and request.method == "GET":
        # nginx serves the bytes (and the Range) from its internal location.
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = f"{accel.rstrip('/')}/{body.key}"
        response["X-Accel-Buffering"] = "no"
        for name, value in base.items():
            response[name] = value
        if on_complete is not None and range_header is None:
            on_complete()
        return response

    if request.method == "HEAD":
        response = HttpResponse(status=status, content_type=content_type)
    else:
        response = StreamingHttpResponse(
            _stream(body, start, end, on_complete if status == 200 else None),
            status=status,
            content_type=content_type,
        )
    for name, value in base.items():
        response[name] = value
    response["Content-Length"] = str(length)
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{body.size}"
    return response


def _stream(
    body: Body, start: int, end: int, on_complete: Callable[[], None] | None
) -> Iterator[bytes]:
    if body.size:
        yield from body.chunks(start, end)
    # The server asks for the next chunk only after writing the previous one: reaching this
    # line means the whole body went out. A client that hangs up closes the generator earlier.
    if on_complete is not None:
        on_complete()


def count_download(version: AdapterVersion) -> None:
    with transaction.atomic():
        AdapterVersion.objects.filter(pk=version.pk).update(downloads=F("downloads") + 1)
        Adapter.objects.filter(pk=version.adapter_id).update(downloads=F("downloads") + 1)


def json_error(status: int, detail: str, **extra) -> JsonResponse:
    return JsonResponse(
        {"detail": detail, "errors": extra.pop("errors", {}), **extra}, status=status
    )


def archive_filename(adapter: Adapter, version: AdapterVersion) -> str:
    return f"{adapter.name}.zip"


@require_http_methods(["GET", "HEAD"])
def download_version(request: HttpRequest, org: str, name: str, version: str) -> HttpResponse:
    """GET/HEAD /api/v1/adapters/{org}/{name}/versions/{version}/download."""
    adapter = Adapter.objects.filter(org=org, name=name).first()
    if adapter is None:
        return json_error(404, f"no adapter @{org}/{name}")
    row = adapter.versions.filter(version=version).first()
    if row is None:
        known = list(adapter.versions.values_list("version", flat=True))
        return json_error(404, f"@{org}/{name} has no version {version!r}", versions=known)
    if adapter.status == Adapter.Status.WITHDRAWN:
        return json_error(410, f"@{org}/{name} was withdrawn from the catalogue")
    headers = {}
    if adapter.status == Adapter.Status.YANKED:
        headers["X-Adapter-Yanked"] = "true"
        headers["Warning"] = (
            f'299 - "@{org}/{name} was yanked by a moderator; served only by exact version"'
        )
    status = row.file_status
    if status == AdapterVersion.FileStatus.HOSTED and row.storage_key:
        headers["Content-Disposition"] = content_disposition(archive_filename(adapter, row))
        return serve_body(
            request,
            Body(size=row.size or 0, key=row.storage_key),
            etag=f'"{archive_sha256(row)}"',
            content_type="application/zip",
            headers=headers,
            on_complete=lambda: count_download(row),
        )
    if status == AdapterVersion.FileStatus.DEAD_LINK:
        return json_error(
            410,
            f"the file of @{org}/{name} version {version} is no longer at its link",
            url=row.url,
            file_error=row.file_error,
        )
    if status == AdapterVersion.FileStatus.CHECKSUM_MISMATCH:
        return json_error(
            409,
            f"the file at the link of @{org}/{name} version {version} does not match the "
            "checksum of its card; it is not served",
            url=row.url,
            file_error=row.file_error,
        )
    if not row.url or "://" not in row.url:
        return json_error(404, f"@{org}/{name} version {version} has no file")
    response = HttpResponseRedirect(row.url)
    for name_, value in headers.items():
        response[name_] = value
    if request.method == "GET":
        # An external file: the redirect is all we see of the download.
        count_download(row)
    return response
