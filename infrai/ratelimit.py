"""Fixed-window rate limits kept in Django's cache (Redis when REDIS_URL is set)."""

from __future__ import annotations

import time

from django.core.cache import cache


def hit(scope: str, key: str, limit: int, window_seconds: int) -> bool:
    """Count one attempt; True while the count in the current window is within `limit`."""
    window = int(time.time() // window_seconds)
    cache_key = f"rl:{scope}:{key}:{window}"
    if cache.add(cache_key, 1, timeout=window_seconds + 5):
        count = 1
    else:
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.add(cache_key, 1, timeout=window_seconds + 5)
            count = 1
    return count <= limit
