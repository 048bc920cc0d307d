"""The Redis cache backend that reuses its client (hub_server/cache_backends.py)."""

import pytest


@pytest.fixture
def redis_cache(redis_backend):
    cache = redis_backend()
    yield cache
    cache.delete_many(["a", "n", "gone"])


def test_one_client_serves_every_call(redis_cache):
    client = redis_cache._cache.get_client(write=True)
    assert redis_cache._cache.get_client() is client


def test_it_behaves_as_django_redis_cache(redis_cache):
    redis_cache.set("a", (b"body", {"Content-Type": "application/json"}, '"etag"'), 60)
    assert redis_cache.get("a") == (b"body", {"Content-Type": "application/json"}, '"etag"')
    assert redis_cache.add("n", 1, None) and not redis_cache.add("n", 5, None)
    assert redis_cache.incr("n") == 2
    assert redis_cache.get_many(["a", "n", "gone"]).keys() == {"a", "n"}
    redis_cache.delete("a")
    assert redis_cache.get("a") is None
