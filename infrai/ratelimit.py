"""Fixed-window rate limits kept in Django's cache (Redis when REDIS_URL is set)."""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

log = logging.getLogger(__name__)


def hit(scope: str, key: str, limit: int, window_seconds: int) -> bool:
    """Count one attempt; True while the count in the current window is within `limit`.

    Fails open: if the cache (Redis) is down, the attempt is allowed and a warning logged, so
    an outage of the limiter never takes the API down with it."""
    window = int(time.time() // window_seconds)
    cache_key = f"rl:{scope}:{key}:{window}"
    try:
        if cache.add(cache_key, 1, timeout=window_seconds + 5):
            count = 1
        else:
            try:
                count = cache.incr(cache_key)
            except ValueError:  # expired between add and incr
                cache.add(cache_key, 1, timeout=window_seconds + 5)
                count = 1
    except Exception:
        log.warning("rate limiter unavailable; allowing %s", scope, exc_info=True)
        return True
    return count <= limit


def seconds_left_in_window(window_seconds: int) -> int:
    return window_seconds - int(time.time()) % window_seconds
