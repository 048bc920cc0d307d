"""Rendered responses of read-only catalogue views, cached until the catalogue changes.

The catalogue changes only on sync and publish, so hot reads serve stored bytes. Invalidation is a
generation counter in the cache: every entry carries the generation it was rendered at, and
`catalog_changed` bumps it, so one write makes every stored page stale at once (Redis when
REDIS_URL is set, else local memory).

With Redis, each web process also keeps the responses it served last in memory (`ResponseMemo`,
HUB_RESPONSE_MEMO_MB), and a `GenerationWatch` thread subscribed to the channel that every bump
publishes on keeps the current generation in the process, so a warm read asks Redis nothing. The
watch re-reads the counter after each message (and every few seconds regardless); while it is not
subscribed, every read checks Redis as before.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from hub_server.catalog.signals import catalog_changed

log = logging.getLogger(__name__)

GENERATION_KEY = "catalog:generation"
DEFAULT_TIMEOUT = 24 * 3600


def _fresh_generation() -> int:
    # Never a number used before, even after the cache lost its counter (a flush, an eviction, a
    # Redis restart): per-process memos keyed by generation must never match stale data.
    return time.time_ns() // 1000


def generation(backend=None) -> int:
    backend = backend if backend is not None else cache
    value = backend.get(GENERATION_KEY)
    if value is None:
        backend.add(GENERATION_KEY, _fresh_generation(), timeout=None)
        value = backend.get(GENERATION_KEY) or _fresh_generation()
    return value


@receiver(catalog_changed)
def bump_generation(**kwargs) -> None:
    watch.bumped(advance_generation(cache))  # this process knows at once, the others by message


def advance_generation(backend) -> int:
    """A new generation in `backend`, announced on its channel (Redis) to every watch."""
    try:
        value = backend.incr(GENERATION_KEY)
    except ValueError:
        value = _fresh_generation()
        backend.set(GENERATION_KEY, value, timeout=None)
    client = redis_client(backend)
    if client is not None:
        try:
            client.publish(generation_channel(backend), value)
        except Exception:  # noqa: BLE001 - the watches re-read on their own within seconds
            log.warning("could not publish the catalogue generation", exc_info=True)
    return value


# -- the in-process layer (Redis only) ---------------------------------------------------------


def redis_client(backend):
    """The redis-py client behind a Django Redis cache backend, or None for any other backend."""
    get_client = getattr(getattr(backend, "_cache", None), "get_client", None)
    return get_client(write=True) if get_client is not None else None


def generation_channel(backend) -> str:
    return f"{getattr(backend, 'key_prefix', '')}:{GENERATION_KEY}:changed"


class GenerationWatch:
    """The catalogue generation as this process knows it, kept current by a thread subscribed to
    the channel `bump_generation` publishes on. `current()` is None while the thread is not
    subscribed (starting, Redis down, a non-Redis cache): callers then ask the cache.

    The thread starts on first use in each process (so after a fork too). It reads the counter
    after subscribing (no bump can fall between), after every message, and every `recheck`
    seconds, and it trusts what it reads unless this process bumped the counter meanwhile.
    """

    def __init__(self, backend=None, recheck: float = 5.0):
        self._backend = backend
        self.recheck = recheck
        self._value: int | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()

    @property
    def backend(self):
        return self._backend if self._backend is not None else cache

    def current(self) -> int | None:
        if self._pid != os.getpid():
            self._start()
        return self._value

    def bumped(self, value: int) -> None:
        with self._lock:
            self._seq += 1
            if self._value is not None:
                self._value = value

    def stop(self) -> None:
        self._stop.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid, self._value = os.getpid(), None
            self._stop.clear()
        if redis_client(self.backend) is None:
            return
        threading.Thread(target=self._run, name="catalog-generation-watch", daemon=True).start()

    def _read(self) -> None:
        with self._lock:
            seq = self._seq
        value = generation(self.backend)
        with self._lock:
            if self._seq == seq:  # else this process bumped meanwhile: keep its value
                self._value = value

    def _run(self) -> None:
        backend = self.backend  # this thread's own connection to the cache
        backoff = 0.5
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = redis_client(backend).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(generation_channel(backend))
                self._read()
                backoff, last_read = 0.5, time.monotonic()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=min(1.0, self.recheck))
                    if message is not None or time.monotonic() - last_read >= self.recheck:
                        self._read()
                        last_read = time.monotonic()
            except Exception:  # noqa: BLE001 - Redis gone: fall back to asking it per request
                with self._lock:
                    self._value = None
                log.warning("catalogue generation watch lost Redis; retrying", exc_info=True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass
        with self._lock:
            self._value = None


class ResponseMemo:
    """The stored responses this process served last, least recently used out first, at most
    `max_bytes` of bodies in all (a body over an eighth of that is not kept)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, current: int):
        with self._lock:
            stored = self._entries.get(key)
            if stored is None or stored[0] != current:
                return None
            self._entries.move_to_end(key)
            return stored

    def put(self, key: str, stored: tuple) -> None:
        size = len(stored[1])
        if size > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._entries[key] = stored
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted[1])


watch = GenerationWatch()
memo = ResponseMemo(getattr(settings, "HUB_RESPONSE_MEMO_MB", 64) * 1024 * 1024)


STORED_HEADERS = ("Content-Type", "Cache-Control", "Link", "Vary")


def origin(request: HttpRequest) -> str:
    """A `vary` for views whose bodies hold absolute URLs: the scheme and host the client used."""
    return f"{request.scheme}://{request.get_host()}"


def response_key(prefix: str, request: HttpRequest, vary: str = "") -> str:
    digest = hashlib.sha1(f"{request.get_full_path()}|{vary}".encode()).hexdigest()
    return f"resp:{prefix}:{digest}"


def cached_view(prefix: str, timeout: int = DEFAULT_TIMEOUT, vary: Callable | None = None):
    """Cache successful GET responses of a view (status, body, a few headers) per full path.

    Only anonymous-safe views should use this: the key ignores the user unless `vary` says
    otherwise. The entry carries the generation it was rendered at. With the generation watch
    running, a page this process holds at the current generation is served without asking Redis;
    otherwise one `get_many` reads the entry together with the current generation, and a page
    rendered again after a change overwrites its stale entry. The ETag is the body's hash, and
    If-None-Match is answered with 304 from the cache. A text body of 1 KB or more goes out
    gzip-compressed to a client that accepts it (compressed once per process and content, with
    its own ETag, `Vary: Accept-Encoding` either way).
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in ("GET", "HEAD"):
                return view(request, *args, **kwargs)
            key = response_key(prefix, request, vary(request) if vary else "")
            known = watch.current() if memo.max_bytes else None
            stored = memo.get(key, known) if known is not None else None
            if stored is None:
                stored, passed_on = _from_cache(request, key, view, args, kwargs, timeout)
                if stored is None:  # not a page to store: an error, a redirect, a stream
                    return passed_on
                if known is not None:
                    memo.put(key, stored)
            _, body, headers, etag = stored
            encoding = None  # a body too small or not text has one representation
            if _compressible(body, headers):
                encoding = "identity"
                if accepts_gzip(request.headers.get("Accept-Encoding", "")):
                    encoding, body, etag = "gzip", gzipped(body, etag), etag[:-1] + '-gzip"'
            if etag in request.headers.get("If-None-Match", ""):
                response = HttpResponse(status=304)
            else:
                response = HttpResponse(body)
            for name, value in headers.items():
                response[name] = value
            response["ETag"] = etag
            if encoding is not None:
                patch_vary_headers(response, ("Accept-Encoding",))
                if encoding == "gzip":
                    response["Content-Encoding"] = "gzip"
            response.setdefault("Cache-Control", "public, max-age=60")
            return response

        return wrapper

    return decorator


# -- gzip for clients that accept it ---------------------------------------------------------

GZIP_MIN_BYTES = 1024
_GZIP_TYPES = ("application/json", "application/vnd.oai.openapi+json", "text/")
# Compressed bodies by the ETag of the identity body: content-addressed, so never stale.
_gzipped = ResponseMemo(max(memo.max_bytes // 4, 16 * 1024 * 1024))


def _compressible(body: bytes, headers: dict) -> bool:
    kind = headers.get("Content-Type", "")
    return len(body) >= GZIP_MIN_BYTES and kind.startswith(_GZIP_TYPES)


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value admits gzip (RFC 9110: `gzip;q=0` refuses it, `*`
    stands for any coding not named)."""
    star = None
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding == "*":
            star = quality > 0
        else:
            return quality > 0
    return bool(star)


def gzipped(body: bytes, etag: str) -> bytes:
    """`body` gzip-compressed, once per process and content (level 6, no timestamp: the same
    bytes every time, so the derived ETag holds)."""
    found = _gzipped.get(etag, 0)
    if found is not None:
        return found[1]
    compressed = gzip.compress(body, compresslevel=6, mtime=0)
    _gzipped.put(etag, (0, compressed))
    return compressed


def _from_cache(request, key, view, args, kwargs, timeout):
    """(stored entry, None) from the shared cache, rendering and storing the page on a miss;
    (None, response) when the view's response is not one to store."""
    found = cache.get_many([GENERATION_KEY, key])
    current = found.get(GENERATION_KEY) or generation()
    stored = found.get(key)
    if stored is not None and stored[0] == current:
        return stored, None
    request.catalog_generation = current  # for views that memoise by generation
    response = view(request, *args, **kwargs)
    if getattr(response, "render", None) and not response.is_rendered:
        response = response.render()
    if response.status_code != 200 or response.streaming:
        return None, response
    body = response.content
    headers = {h: response[h] for h in STORED_HEADERS if response.has_header(h)}
    etag = f'"{hashlib.sha1(body).hexdigest()}"'
    # Stored under the generation read before rendering: a change during the rendering makes
    # this entry stale at once.
    stored = (current, body, headers, etag)
    cache.set(key, stored, timeout)
    return stored, None
