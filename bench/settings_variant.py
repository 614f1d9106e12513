"""Experimental settings for the gateway benchmark's ablation runs (never used by the app itself).

`infrai.settings.base` plus the changes listed in `BENCH_VARIANT` (comma-separated), each
isolating one cost of the shipped configuration on the `/v1` hot path:

- `quiet_log`: the `httpx` logger at WARNING (the shipped LOG_LEVEL=INFO logs one line per
  upstream call to stderr).
- `no_middleware`: MIDDLEWARE = [] (the console's ten middlewares, among them WhiteNoise, which
  is sync-only and so moves every request into a thread and back; `/v1` views need none).
- `async_commit`: `synchronous_commit=off` on the gateway's connections (what the two
  fsync-bound COMMITs per call cost; a durability trade-off, measured, not recommended as is).
- `pool_N`: a connection pool of N (the shipped default is 10).
- `shared_redis`: the Redis cache through infrai/cache.py (one client per process)
  instead of Django's RedisCache, which under ASGI connects to Redis anew for every request.
"""

from __future__ import annotations

import os

from infrai.settings.base import *  # noqa: F403
from infrai.settings.base import CACHES, DATABASES, LOGGING, MIDDLEWARE

VARIANT = {v.strip() for v in os.environ.get("BENCH_VARIANT", "").split(",") if v.strip()}

if "quiet_log" in VARIANT:
    LOGGING = {**LOGGING, "loggers": {**LOGGING["loggers"], "httpx": {"level": "WARNING"}}}

if "no_middleware" in VARIANT:
    MIDDLEWARE = []  # noqa: F811

if "async_commit" in VARIANT:
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c synchronous_commit=off"

if "shared_redis" in VARIANT and "redis" in CACHES["default"]["BACKEND"].lower():
    CACHES = {"default": {**CACHES["default"], "BACKEND": "infrai.cache.ProcessWideRedisCache"}}  # noqa: F811

for _flag in VARIANT:
    if _flag.startswith("pool_") and "pool" in DATABASES["default"].get("OPTIONS", {}):
        DATABASES["default"]["OPTIONS"]["pool"]["max_size"] = int(_flag.removeprefix("pool_"))
