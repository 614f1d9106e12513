"""Fixed-window rate limits kept in Django's cache (Redis when REDIS_URL is set)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bucket:
    """The counter of one scope and key in the current fixed window."""

    scope: str
    key: str
    window_seconds: int

    @property
    def name(self) -> str:
        return f"rl:{self.scope}:{self.key}:{int(time.time() // self.window_seconds)}"

    @property
    def ttl_seconds(self) -> int:
        return self.window_seconds + 5


def hit(scope: str, key: str, limit: int, window_seconds: int) -> bool:
    """Count one attempt; True while the count in the current window is within `limit`.

    Fails open: if the cache (Redis) is down, the attempt is allowed and a warning logged, so
    an outage of the limiter never takes the API down with it."""
    bucket = Bucket(scope, key, window_seconds)
    try:
        count = _count(bucket.name, bucket.ttl_seconds)
    except Exception:
        log.warning("rate limiter unavailable; allowing %s", scope, exc_info=True)
        return True
    return count <= limit


def seconds_left_in_window(window_seconds: int) -> int:
    return window_seconds - int(time.time()) % window_seconds


def _redis(backend: Any) -> Any:
    """The Redis client behind Django's cache, when the cache is Redis."""
    return backend._cache.get_client(write=True) if isinstance(backend, RedisCache) else None  # noqa: SLF001


def _count(cache_key: str, ttl_seconds: int) -> int:
    client = _redis(caches["default"])
    if client is not None:
        # One round trip on the hot path: increment and (re)arm the expiry together.
        pipe = client.pipeline(transaction=False)
        name = cache.make_key(cache_key)
        pipe.incr(name)
        pipe.expire(name, ttl_seconds)
        count, _ = pipe.execute()
        return int(count)
    if cache.add(cache_key, 1, timeout=ttl_seconds):
        return 1
    try:
        return int(cache.incr(cache_key))
    except ValueError:  # expired between add and incr
        cache.add(cache_key, 1, timeout=ttl_seconds)
        return 1
