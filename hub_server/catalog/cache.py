"""Rendered responses of read-only catalogue views, cached until the catalogue changes.

The catalogue changes only on sync and publish, so hot reads serve stored bytes. Invalidation is a
generation counter in the cache: every key includes it, and `catalog_changed` bumps it, so one
write makes every stored page stale at once (Redis when REDIS_URL is set, else local memory).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from hub_server.catalog.signals import catalog_changed

GENERATION_KEY = "catalog:generation"
DEFAULT_TIMEOUT = 24 * 3600


def generation() -> int:
    value = cache.get(GENERATION_KEY)
    if value is None:
        cache.add(GENERATION_KEY, 1, timeout=None)
        value = cache.get(GENERATION_KEY, 1)
    return value


@receiver(catalog_changed)
def bump_generation(**kwargs) -> None:
    try:
        cache.incr(GENERATION_KEY)
    except ValueError:
        cache.set(GENERATION_KEY, 2, timeout=None)


def response_key(prefix: str, request: HttpRequest, vary: str = "") -> str:
    raw = f"{request.get_full_path()}|{vary}"
    digest = hashlib.sha1(raw.encode()).hexdigest()
    return f"resp:{prefix}:{generation()}:{digest}"


def cached_view(prefix: str, timeout: int = DEFAULT_TIMEOUT, vary: Callable | None = None):
    """Cache successful GET responses of a view (status, body, a few headers) per full path.

    Only anonymous-safe views should use this: the key ignores the user unless `vary` says otherwise.
    The ETag is the body's hash, and If-None-Match is answered with 304 from the cache.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in ("GET", "HEAD"):
                return view(request, *args, **kwargs)
            key = response_key(prefix, request, vary(request) if vary else "")
            stored = cache.get(key)
            if stored is None:
                response = view(request, *args, **kwargs)
                if getattr(response, "render", None) and not response.is_rendered:
                    response = response.render()
                if response.status_code != 200 or response.streaming:
                    return response
                body = response.content
                headers = {
                    h: response[h]
                    for h in ("Content-Type", "Cache-Control", "Link", "Vary")
                    if response.has_header(h)
                }
                etag = '"' + hashlib.sha1(body).hexdigest() + '"'
                stored = (body, headers, etag)
                cache.set(key, stored, timeout)
            body, headers, etag = stored
            if etag in request.headers.get("If-None-Match", ""):
                response = HttpResponse(status=304)
            else:
                response = HttpResponse(body)
            for name, value in headers.items():
                response[name] = value
            response["ETag"] = etag
            response.setdefault("Cache-Control", "public, max-age=60")
            return response

        return wrapper

    return decorator
