"""The in-process layer of the response cache: the generation watch and the memo of pages
(hub_server/catalog/cache.py), against a real Redis."""

import time

import pytest

from hub_server.cache_backends import RedisCache
from hub_server.catalog.cache import (
    GENERATION_KEY,
    GenerationWatch,
    ResponseMemo,
    advance_generation,
    generation,
)


@pytest.fixture
def two_processes(redis_backend):
    """Two cache backends on one Redis and key prefix, as two web processes of one hub have."""
    mine, theirs = redis_backend(), redis_backend()
    yield mine, theirs
    mine.delete(GENERATION_KEY)


def eventually(condition, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_watch_learns_of_a_change_made_by_another_process(two_processes):
    mine, theirs = two_processes
    watch = GenerationWatch(mine, recheck=3600)  # only the published message can tell it
    try:
        first = eventually(watch.current)
        assert first == generation(theirs)
        for _ in range(3):
            changed = advance_generation(theirs)
            assert changed != first
            eventually(lambda value=changed: watch.current() == value, timeout=2)
            first = changed
    finally:
        watch.stop()


def test_watch_without_redis_vouches_for_nothing():
    unreachable = RedisCache("redis://127.0.0.1:1/0", {"KEY_PREFIX": "nothing"})
    watch = GenerationWatch(unreachable, recheck=0.1)
    try:
        for _ in range(20):
            assert watch.current() is None  # every read then asks the shared cache itself
            time.sleep(0.05)
    finally:
        watch.stop()


def test_watch_of_a_local_memory_cache_stays_off():
    from django.core.cache.backends.locmem import LocMemCache

    watch = GenerationWatch(LocMemCache("memo-test", {}))
    assert watch.current() is None


def test_memo_serves_only_the_current_generation_within_its_size():
    memo = ResponseMemo(max_bytes=1000)
    memo.put("a", (1, b"x" * 100, {}, '"a"'))
    assert memo.get("a", 1)[1] == b"x" * 100
    assert memo.get("a", 2) is None  # rendered before the last change: never served
    memo.put("huge", (1, b"x" * 200, {}, '"h"'))  # over an eighth of the memo: not kept
    assert memo.get("huge", 1) is None
    for i in range(20):
        memo.put(f"p{i}", (1, b"y" * 100, {}, f'"{i}"'))
        memo.get("p0", 1)  # the page read most stays
    kept = [i for i in range(20) if memo.get(f"p{i}", 1)]
    assert 0 in kept and 19 in kept and len(kept) <= 10
