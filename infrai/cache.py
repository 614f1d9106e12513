"""A Django Redis cache backend that keeps its connections for the life of the process: the
backend of CACHES when REDIS_URL is set (infrai/settings/base.py).

Django's `django.core.cache.cache` is a context-local, so under ASGI every request gets a new
RedisCache, whose new RedisCacheClient makes a new connection pool: one TCP connection to Redis
per request, and a new `redis.Redis` object (with its ~250-entry callback table) per operation.
Here every instance for the same servers and options shares one client, which keeps one
`redis.Redis` per pool. redis-py clients and pools are thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property


class KeptClientsRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._clients.setdefault(index, self._client(connection_pool=self._get_connection_pool(index)))
        return client


class ProcessWideRedisCache(RedisCache):
    _clients: dict[str, RedisCacheClient] = {}
    _lock = threading.Lock()

    @cached_property
    def _cache(self) -> RedisCacheClient:
        identity = repr((self._servers, sorted(self._options.items())))
        with self._lock:
            client = self._clients.get(identity)
            if client is None:
                client = self._clients[identity] = KeptClientsRedisCacheClient(self._servers, **self._options)
        return client
