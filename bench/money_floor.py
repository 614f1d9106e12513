"""The money floor: the raw pass-through floor plus only the per-call steps that the
non-negotiables make every call pay, with the gateway's own code for each. Bench-only.

`bench/raw_floor.py`'s bare ASGI app (no Django request objects, no routing, no validation), and
around each forwarded call, depending on `MONEY_FLOOR_STEPS` (comma-separated):

- `key`: the bearer key checked and the per-key rate count, in the gateway's one Redis round
  trip (`infrai.cache.read_and_count`, `console.keys.from_cache`);
- `ledger`: a hold taken before the upstream call and settled with its usage record after it
  (`billing.ledger.areserve` / `asettle` on the event loop's psycopg pool): the two durable
  statements that make "no call spends credit that is not there" and "charged once" hold per call.

What it measures: how close to the raw floor a gateway that keeps those guarantees per call can
get on this machine, whatever else it does or skips. The shipped gateway cannot beat this row.

    MONEY_FLOOR_STEPS=key,ledger RAW_FLOOR_UPSTREAM=http://127.0.0.1:9100 \\
        DJANGO_SETTINGS_MODULE=infrai.settings.base DATABASE_URL=... REDIS_URL=... \\
        .venv/bin/python -m daphne -p 9300 bench.money_floor:application
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from typing import Any

import django

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402

from bench import raw_floor  # noqa: E402
from bench.raw_floor import Receive, Scope, Send  # noqa: E402
from billing import ledger  # noqa: E402
from console import keys  # noqa: E402
from gateway.catalog import RoutingData  # noqa: E402
from gateway.metering import UsageFacts, usage_row  # noqa: E402
from infrai import cache, ratelimit  # noqa: E402

STEPS = {s.strip() for s in os.environ.get("MONEY_FLOOR_STEPS", "key,ledger").split(",") if s.strip()}
HOLD_NANO = 1_000_000  # $0.001: above the bench call's price, like the gateway's estimate
CHARGE_NANO = 7_000


async def refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"code": "MONEY_FLOOR", "message": message}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def check_key(scope: Scope) -> Any:
    """The caller's key, as the gateway finds it: None when unknown or over its rate limit."""
    auth = dict(scope["headers"]).get(b"authorization", b"").decode()
    digest = keys.hash_key(auth.removeprefix("Bearer ").strip())
    bucket = ratelimit.Bucket("api-key", digest, 60)
    shared = await cache.read_and_count(keys.shared_cache(), [keys.entry_name(digest), RoutingData.VERSION_KEY], bucket)
    if shared is None:
        raise RuntimeError("the money floor needs Redis")
    (cached, _version), _count = shared
    key = keys.from_cache(cached)
    if key is keys.NOT_CACHED:  # the first call only: the gateway caches the key the same way
        key = await sync_to_async(keys.find_active_key)(auth.removeprefix("Bearer ").strip())
    return key


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await raw_floor.application(scope, receive, send)
        return
    key = None
    if "key" in STEPS:
        key = await check_key(scope)
        if key is None:
            await refuse(send, 401, "unknown key")
            return
    if "ledger" not in STEPS or key is None:
        await raw_floor.application(scope, receive, send)
        return
    request_id = f"req_{uuid.uuid4().hex}"
    account_id = key.project.account_id
    hold = await ledger.areserve(account_id, HOLD_NANO, request_id, ttl=timedelta(minutes=10))
    await raw_floor.application(scope, receive, send)
    facts = UsageFacts(
        capability="chat", model="deepseek-chat", vendor="openai_compatible", input_tokens=12, output_tokens=40
    )
    await ledger.asettle(
        hold, CHARGE_NANO, usage=usage_row(request_id, account_id, key.project_id, key.pk, CHARGE_NANO, facts)
    )
