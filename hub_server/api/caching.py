"""The API's response cache: `hub_server.catalog.cache.cached_view` in one cache round trip.

Same contract as `cached_view` (rendered 200s stored until `catalog_changed` bumps the catalogue
generation; ETag and 304; only anonymous-safe views), but the key holds no generation: the entry
carries the generation it was rendered at, and one `get_many` fetches the entry together with the
current generation. A warm hit is one Redis round trip instead of two (the round trips are most of
a hit's cost), and a page re-rendered after a change overwrites its stale entry instead of leaving
it behind until the timeout.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

from django.core.cache import cache
from django.http import HttpResponse

from hub_server.catalog.cache import DEFAULT_TIMEOUT, GENERATION_KEY, generation

STORED_HEADERS = ("Content-Type", "Cache-Control", "Link", "Vary")


def page_key(prefix: str, request, vary: str = "") -> str:
    digest = hashlib.sha1(f"{request.get_full_path()}|{vary}".encode()).hexdigest()
    return f"api:{prefix}:{digest}"


def cached_api_view(prefix: str, vary: Callable | None = None, timeout: int = DEFAULT_TIMEOUT):
    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in ("GET", "HEAD"):
                return view(request, *args, **kwargs)
            key = page_key(prefix, request, vary(request) if vary else "")
            found = cache.get_many([GENERATION_KEY, key])
            current = found.get(GENERATION_KEY)
            if current is None:
                current = generation()  # first use of this cache: start the counter
            stored = found.get(key)
            if stored is None or stored[0] != current:
                request.catalog_generation = current  # for views that key memos by it
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
