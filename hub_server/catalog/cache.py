"""Rendered responses of read-only catalogue views, cached until the catalogue changes.

The catalogue changes only on sync and publish, so hot reads serve stored bytes. Invalidation is a
generation counter in the cache: every key includes it, and `catalog_changed` bumps it, so one
write makes every stored page stale at once (Redis when REDIS_URL is set, else local memory).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable

from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from hub_server.catalog.signals import catalog_changed

GENERATION_KEY = "catalog:generation"
DEFAULT_TIMEOUT = 24 * 3600


def _fresh_generation() -> int:
    # Never a number used before, even after the cache lost its counter (a flush, an eviction, a
    # Redis restart): per-process memos keyed by generation must never match stale data.
    return time.time_ns() // 1000


def generation() -> int:
    value = cache.get(GENERATION_KEY)
    if value is None:
        cache.add(GENERATION_KEY, _fresh_generation(), timeout=None)
        value = cache.get(GENERATION_KEY) or _fresh_generation()
    return value


@receiver(catalog_changed)
def bump_generation(**kwargs) -> None:
    try:
        cache.incr(GENERATION_KEY)
    except ValueError:
        cache.set(GENERATION_KEY, _fresh_generation(), timeout=None)


STORED_HEADERS = ("Content-Type", "Cache-Control", "Link", "Vary")


def response_key(prefix: str, request: HttpRequest, vary: str = "") -> str:
    digest = hashlib.sha1(f"{request.get_full_path()}|{vary}".encode()).hexdigest()
    return f"resp:{prefix}:{digest}"


def cached_view(prefix: str, timeout: int = DEFAULT_TIMEOUT, vary: Callable | None = None):
    """Cache successful GET responses of a view (status, body, a few headers) per full path.

    Only anonymous-safe views should use this: the key ignores the user unless `vary` says
    otherwise. The entry carries the generation it was rendered at, and one `get_many` reads it
    together with the current generation: a warm hit is one cache round trip, and a page rendered
    again after a change overwrites its stale entry. The ETag is the body's hash, and
    If-None-Match is answered with 304 from the cache.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in ("GET", "HEAD"):
                return view(request, *args, **kwargs)
            key = response_key(prefix, request, vary(request) if vary else "")
            found = cache.get_many([GENERATION_KEY, key])
            current = found.get(GENERATION_KEY) or generation()
            stored = found.get(key)
            if stored is None or stored[0] != current:
                request.catalog_generation = current  # for views that memoise by generation
                response = view(request, *args, **kwargs)
                if getattr(response, "render", None) and not response.is_rendered:
                    response = response.render()
                if response.status_code != 200 or response.streaming:
                    return response
                body = response.content
                headers = {h: response[h] for h in STORED_HEADERS if response.has_header(h)}
                etag = f'"{hashlib.sha1(body).hexdigest()}"'
                # Stored under the generation read before rendering: a change during the
                # rendering makes this entry stale at once.
                stored = (current, body, headers, etag)
                cache.set(key, stored, timeout)
            _, body, headers, etag = stored
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
