"""A Django Redis cache backend that keeps its connections for the life of the process: the
backend of CACHES when REDIS_URL is set (infrai/settings/base.py).

Django's `django.core.cache.cache` is a context-local, so under ASGI every request gets a new
RedisCache, whose new RedisCacheClient makes a new connection pool: one TCP connection to Redis
per request, and a new `redis.Redis` object (with its ~250-entry callback table) per operation.
Here every instance for the same servers and options shares one client, which keeps one
`redis.Redis` per pool. redis-py clients and pools are thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

from infrai import ratelimit

log = logging.getLogger(__name__)


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


# --- The same Redis from the event loop ---------------------------------------------------------

REDIS_TIMEOUT_SECONDS = 2
_async_scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _read_and_count_script(backend: RedisCache) -> Any:
    """READ_AND_COUNT on a redis.asyncio client of the cache's write server, one per event loop
    (daphne has one; tests start many): redis-py's asyncio connections belong to the loop that
    opened them."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    script = _async_scripts.get(loop)
    if script is None:
        # Bounded waits: a Redis that hangs must cost a call seconds at most, then the sync path
        # (which fails open) takes over.
        client = redis.asyncio.Redis.from_url(
            backend._servers[0],  # noqa: SLF001
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        script = _async_scripts[loop] = client.register_script(READ_AND_COUNT)
    return script


# Reads the entries in KEYS[1..n-1] and, when ARGV[1] is not 0, counts the bucket in KEYS[n]
# (INCR, then EXPIRE to ARGV[1] seconds): one command, which costs the client a third of the
# CPU of the same four commands pipelined.
READ_AND_COUNT = """
local values = {}
local readable = #KEYS
if ARGV[1] ~= '0' then readable = readable - 1 end
for i = 1, readable do values[i] = redis.call('GET', KEYS[i]) or false end
if ARGV[1] ~= '0' then
    values[#KEYS] = redis.call('INCR', KEYS[#KEYS])
    redis.call('EXPIRE', KEYS[#KEYS], ARGV[1])
end
return values
"""


async def read_and_count(
    backend: BaseCache, names: list[str], bucket: ratelimit.Bucket | None
) -> tuple[list[Any], int | None] | None:
    """Read cache entries and count a rate-limit bucket in one round trip, without a thread.
    None when the cache is not Redis or Redis fails: the caller then takes the sync way, which
    fails open like the rate limiter does."""
    if not isinstance(backend, RedisCache):
        return None
    keys = [backend.make_key(name) for name in names]
    if bucket is not None:
        keys.append(backend.make_key(bucket.name))
    try:
        replies = await _read_and_count_script(backend)(
            keys=keys, args=[bucket.ttl_seconds if bucket is not None else 0]
        )
    except Exception:
        log.warning("cache unavailable from the event loop; taking the thread", exc_info=True)
        return None
    serializer = backend._cache._serializer  # noqa: SLF001
    values = [None if raw in (None, False) else serializer.loads(raw) for raw in replies[: len(names)]]
    return values, (int(replies[len(names)]) if bucket is not None else None)
