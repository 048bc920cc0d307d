"""Django's Redis cache with one redis client per connection pool, instead of one per operation.

Django 5.2's RedisCacheClient builds a `redis.Redis` for every cache call; with redis-py 8 that
constructor (it fills a table of ~170 response callbacks) costs more CPU than the GET itself, and
was half the cost of serving a cached page. Clients are thread-safe and only wrap the pool, so
one per pool is enough; redis-py's pool reconnects by itself in a forked worker.
"""

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient
