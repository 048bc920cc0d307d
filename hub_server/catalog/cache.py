"""Rendered responses of read-only catalogue views, and how long each may be served.

Two stores, each with a stated staleness bound and failure mode (docs/architecture.md):

- `memo`: the responses this process served last, in its own memory, least recently used out
  first within HUB_RESPONSE_MEMO_MB (counting body, headers and key). The only store of the
  embedded default (no REDIS_URL); in front of Redis otherwise, so a warm read asks nothing
  outside the process.
- the shared cache (Redis, when REDIS_URL is set): pages rendered by one web process serve the
  others. Unreachable, it is skipped for HUB_CACHE_RETRY_SECONDS and every read renders from the
  database (fail open); /readyz reports it as degraded.

Every entry carries the catalogue generation it was rendered at and when. The generation lives in
the database (`CatalogGeneration`): every catalogue change sets a new value (`catalog_changed`),
and each process re-reads it at most every HUB_CATALOG_RECHECK_SECONDS, so a change made by any
process (a `manage.py sync_hub`, a worker's publish) is served by every web process within that
many seconds, with Redis or without. An entry is also served for at most HUB_RESPONSE_MAX_AGE
seconds whatever the generation: download counts, which move without a catalogue change, are at
most that old in lists and details (and a change that announced nothing, such as an admin edit,
is bounded by it too).

Cache keys hold only the query parameters a view reads (`params`), sorted: unknown parameters and
their order make no new entries, and the request the view sees carries that normalised query.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, QueryDict
from django.utils.cache import patch_vary_headers

from hub_server.catalog.signals import catalog_changed

log = logging.getLogger(__name__)


# -- the catalogue generation, in the database -------------------------------------------------


def _fresh_generation() -> int:
    # Microseconds since the epoch: a value never used before, even after a rolled-back change
    # put an older one back (so no stored entry of the rolled-back data can ever match again).
    return time.time_ns() // 1000


def read_generation() -> int:
    """The catalogue generation as the database holds it now."""
    from hub_server.catalog.models import CatalogGeneration

    rows = CatalogGeneration.objects.filter(pk=1).values_list("value", flat=True)
    value = rows.first()
    if value is None:
        CatalogGeneration.objects.bulk_create(
            [CatalogGeneration(pk=1, value=_fresh_generation())], ignore_conflicts=True
        )
        value = rows.first()
    return value


def advance_generation() -> int:
    """A new catalogue generation in the database: later than every earlier one."""
    from hub_server.catalog.models import CatalogGeneration

    read_generation()  # the row exists
    CatalogGeneration.objects.filter(pk=1).update(
        value=Greatest(F("value") + 1, Value(_fresh_generation()))
    )
    return read_generation()


class GenerationClock:
    """The catalogue generation as this process knows it: read from the database when last read
    more than `recheck` seconds ago (HUB_CATALOG_RECHECK_SECONDS), at once after this process
    changed it. The bound on a stale read is therefore `recheck` seconds after the change
    committed. A failed read raises, as any database read of the request would."""

    def __init__(self, recheck: float | None = None):
        self._recheck = recheck
        self._known: tuple[int, float] | None = None  # (value, monotonic time it was read)

    @property
    def recheck(self) -> float:
        if self._recheck is not None:
            return self._recheck
        return settings.HUB_CATALOG_RECHECK_SECONDS

    def current(self) -> int:
        known = self._known
        now = time.monotonic()
        if known is None or now - known[1] >= self.recheck:
            known = self._known = (read_generation(), now)
        return known[0]

    def bumped(self, value: int) -> None:
        self._known = (value, time.monotonic())

    def expire(self) -> None:
        """Read the database at the next `current()` (tests: as if `recheck` seconds passed)."""
        self._known = None


clock = GenerationClock()


def generation() -> int:
    return clock.current()


@receiver(catalog_changed)
def bump_generation(**kwargs) -> None:
    clock.bumped(advance_generation())  # this process at once, the others within `recheck`


def max_age() -> float:
    return settings.HUB_RESPONSE_MAX_AGE


def is_fresh(stored: tuple, current: int) -> bool:
    """Whether a stored entry (generation, rendered at, ...) may be served now."""
    return stored[0] == current and time.time() - stored[1] < max_age()


# -- the in-process memo -----------------------------------------------------------------------

# What a stored entry costs beyond its bytes: the tuple, the dict, the objects that hold them.
ENTRY_OVERHEAD = 400


def entry_cost(key: str, stored: tuple) -> int:
    text = sum(len(k) + len(v) for k, v in stored[3].items())
    return len(stored[2]) + text + len(key) + ENTRY_OVERHEAD


class ByteLRU:
    """A thread-safe map that keeps at most `max_bytes` of entries by the cost given with each,
    least recently used out first; an entry over an eighth of the budget is not kept."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str):
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: str, value, cost: int) -> None:
        if cost > self.max_bytes // 8:
            return
        with self._lock:
            self._pop(key)
            self._entries[key] = (value, cost)
            self._bytes += cost
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def pop(self, key: str) -> None:
        with self._lock:
            self._pop(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _pop(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]


class ResponseMemo(ByteLRU):
    """Entries (generation, rendered at, body, headers, etag) this process served last, costed
    by `entry_cost`; `get` returns only an entry `is_fresh` at the given generation."""

    def get(self, key: str, current: int):
        stored = super().get(key)
        if stored is not None and not is_fresh(stored, current):
            self.pop(key)
            return None
        return stored

    def put(self, key: str, stored: tuple) -> None:
        super().put(key, stored, entry_cost(key, stored))


memo = ResponseMemo(getattr(settings, "HUB_RESPONSE_MEMO_MB", 64) * 1024 * 1024)


# -- the shared cache (Redis), failing open ----------------------------------------------------


class SharedCache:
    """The configured cache when it is shared between processes (not local memory). Every call
    fails open: an error logs, answers "no entry", and keeps the cache out of the read path for
    HUB_CACHE_RETRY_SECONDS, so an unreachable Redis costs one failed attempt per interval and
    process, not one per request."""

    def __init__(self):
        self._down_until = 0.0
        self.last_error = ""

    @property
    def backend(self):
        backend = caches["default"]
        return None if isinstance(backend, LocMemCache | DummyCache) else backend

    def usable(self):
        backend = self.backend
        if backend is None or time.monotonic() < self._down_until:
            return None
        return backend

    def failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + settings.HUB_CACHE_RETRY_SECONDS
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("shared cache unreachable, reading from the database: %s", self.last_error)

    def get(self, key: str):
        backend = self.usable()
        if backend is None:
            return None
        try:
            return backend.get(key)
        except Exception as exc:  # noqa: BLE001 - fail open: the database answers
            self.failed(exc)
            return None

    def set(self, key: str, stored: tuple) -> None:
        backend = self.usable()
        if backend is None:
            return
        try:
            backend.set(key, stored, max(1, int(max_age()) + 1))
        except Exception as exc:  # noqa: BLE001
            self.failed(exc)

    def health(self) -> str:
        """ "ok", "degraded: <why>" (reads fall back to the database) or what stands in for it."""
        backend = self.backend
        if backend is None:
            return "local memory (no REDIS_URL)"
        try:
            backend.get("catalog:health")
        except Exception as exc:  # noqa: BLE001
            self.failed(exc)
            return f"degraded: {self.last_error}"
        self._down_until = 0.0
        return "ok"


shared = SharedCache()


# -- cached views -----------------------------------------------------------------------------

STORED_HEADERS = ("Content-Type", "Cache-Control", "Link", "Vary")


def origin(request: HttpRequest) -> str:
    """A `vary` for views whose bodies hold absolute URLs: the scheme and host the client used."""
    return f"{request.scheme}://{request.get_host()}"


def normalise_query(request: HttpRequest, params: frozenset[str]) -> str:
    """Keep only the query parameters in `params` (each with its values in order), sorted by
    name, in the request itself: the view then renders exactly what the cache key says."""
    query = QueryDict(mutable=True)
    for name in sorted(params & request.GET.keys()):
        query.setlist(name, request.GET.getlist(name))
    normalised = query.urlencode()
    if normalised != request.META.get("QUERY_STRING", ""):
        query._mutable = False
        request.GET = query
        request.META["QUERY_STRING"] = normalised
    return normalised


def response_key(prefix: str, request: HttpRequest, vary: str = "") -> str:
    digest = hashlib.sha1(f"{request.get_full_path()}|{vary}".encode()).hexdigest()
    return f"resp:{prefix}:{digest}"


def cached_view(prefix: str, vary: Callable | None = None, params: Iterable[str] = ()):
    """Cache successful GET responses of a view (status, body, a few headers).

    Only anonymous-safe views should use this: the key ignores the user unless `vary` says
    otherwise. `params` names every query parameter the view reads; the others are dropped
    before the view runs. A read is served from the memo, else the shared cache, else rendered
    (and stored in both) at the generation read before rendering: a change during the
    rendering makes the entry stale at once. The ETag is the body's hash, and If-None-Match is
    answered with 304 from the entry. A text body of 1 KB or more goes out gzip-compressed to a
    client that accepts it (compressed once per process and content, with its own ETag,
    `Vary: Accept-Encoding` either way).
    """
    params = frozenset(params)

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in ("GET", "HEAD"):
                return view(request, *args, **kwargs)
            normalise_query(request, params)
            key = response_key(prefix, request, vary(request) if vary else "")
            current = clock.current()
            stored = memo.get(key, current)
            if stored is None:
                stored = shared.get(key)
                if stored is None or not is_fresh(stored, current):
                    stored, passed_on = _render(request, current, view, args, kwargs)
                    if stored is None:  # not a page to store: an error, a redirect, a stream
                        return passed_on
                    shared.set(key, stored)
                memo.put(key, stored)
            _, _, body, headers, etag = stored
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


def _render(request, current, view, args, kwargs):
    """(entry, None) for the view's response rendered now; (None, response) when the response
    is not one to store."""
    request.catalog_generation = current  # for views that memoise by generation
    response = view(request, *args, **kwargs)
    if getattr(response, "render", None) and not response.is_rendered:
        response = response.render()
    if response.status_code != 200 or response.streaming:
        return None, response
    body = response.content
    headers = {h: response[h] for h in STORED_HEADERS if response.has_header(h)}
    etag = f'"{hashlib.sha1(body).hexdigest()}"'
    return (current, time.time(), body, headers, etag), None


# -- gzip for clients that accept it ---------------------------------------------------------

GZIP_MIN_BYTES = 1024
_GZIP_TYPES = ("application/json", "application/vnd.oai.openapi+json", "text/")
# Compressed bodies by the ETag of the identity body: content-addressed, so never stale; least
# recently used out first past a quarter of the memo's budget (at least 16 MB).
_gzipped = ByteLRU(max(memo.max_bytes // 4, 16 * 1024 * 1024))


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
    found = _gzipped.get(etag)
    if found is None:
        found = gzip.compress(body, compresslevel=6, mtime=0)
        _gzipped.put(etag, found, len(found) + len(etag) + ENTRY_OVERHEAD)
    return found


def forget_responses() -> None:
    """Every response this process stored, out (tests: the next read renders; the shared cache
    is cleared apart)."""
    memo.clear()
    _gzipped.clear()
