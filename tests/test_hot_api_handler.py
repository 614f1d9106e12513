"""The routes every API call goes through (`/v1/chat/completions`, `/v1/ai/chat`) are served by
infrai/asgi.py's HotApiHandler: no thread per request, the key, routing data, hold and settlement
on the event loop. These tests drive the real ASGI application, as daphne does."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from asgiref.sync import SyncToAsync
from django.db import connection

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from console import keys
from console.models import ProjectKey
from infrai.asgi import application
from tests.factories import make_account, make_key
from tests.fakes.openai_upstream import simulated_upstream

pytestmark = pytest.mark.django_db(transaction=True)
USD = 1_000_000_000
CHAT = {"messages": "Hello!", "model": "sandbox-chat", "max_tokens": 20}


def _send(requests: list[dict[str, Any]], between: Any = None) -> list[httpx.Response]:
    """The requests in order through the ASGI application; `between(i)` runs before request i."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=application)
        answers = []
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for i, request in enumerate(requests):
                if between is not None:
                    await between(i)
                answers.append(await client.request(**request))
        return answers

    return asyncio.run(run())


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _charged_nano(response: httpx.Response) -> int:
    return int(Decimal(response.json()["_metadata"]["cost_usd"]) * USD)


def test_calls_are_answered_charged_and_recorded_like_any_api_call():
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    plain, openai_shaped, streamed = _send(
        [
            {"method": "POST", "url": "/v1/ai/chat", "json": CHAT, "headers": _auth(secret)},
            {"method": "POST", "url": "/v1/chat/completions", "json": CHAT, "headers": _auth(secret)},
            {
                "method": "POST",
                "url": "/v1/chat/completions",
                "json": {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                "headers": _auth(secret),
            },
        ]
    )
    assert plain.status_code == 200 and plain.json()["content"]
    assert plain.json()["_metadata"]["vendor"] == "sandbox"
    assert openai_shaped.json()["choices"][0]["message"]["content"]
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.endswith("data: [DONE]\n\n")
    charged = _charged_nano(plain) + _charged_nano(openai_shaped)
    records = UsageRecord.objects.filter(account=account)
    assert records.count() == 3
    assert all(r.key_id == ProjectKey.objects.get().pk and r.status == "ok" for r in records)
    balance = ledger.get_balance(account)
    assert balance.held_nano == 0 and not Hold.objects.filter(state=HoldState.OPEN).exists()
    assert USD - balance.balance_nano == sum(r.cost_nano for r in records) >= charged > 0
    assert ledger.check_consistency() == []
    assert ProjectKey.objects.get().last_used_at is not None


def test_with_postgresql_and_redis_a_warm_call_takes_no_thread(monkeypatch, settings):
    if connection.vendor != "postgresql" or "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.skip("the thread-free path needs PostgreSQL (async psycopg) and Redis (redis.asyncio)")
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    hand_offs: list[str] = []
    real_call = SyncToAsync.__call__

    async def counting(self: SyncToAsync, *args: Any, **kwargs: Any) -> Any:
        hand_offs.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await real_call(self, *args, **kwargs)

    async def count_from_the_second_call(i: int) -> None:
        if i == 1:
            monkeypatch.setattr(SyncToAsync, "__call__", counting)

    request = {"method": "POST", "url": "/v1/chat/completions", "json": CHAT, "headers": _auth(secret)}
    streamed = {**request, "json": {**CHAT, "stream": True}}
    answers = _send([request, request, streamed], between=count_from_the_second_call)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert hand_offs == [], f"{hand_offs}: the first call warmed the key and routing copies; later ones need no thread"
    assert UsageRecord.objects.filter(account=account).count() == 3
    assert ledger.check_consistency() == []


def test_a_key_has_one_limit_across_the_hot_and_the_other_routes(settings):
    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 3
    secret = make_key(make_account(credit_nano=USD))
    chat = {"method": "POST", "url": "/v1/ai/chat", "json": CHAT, "headers": _auth(secret)}
    balance = {"method": "GET", "url": "/v1/account/balance", "headers": _auth(secret)}
    answers = _send([chat, balance, chat, chat, balance])
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    refused = answers[3]
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_a_revoked_key_is_refused_on_the_next_call():
    secret = make_key(make_account(credit_nano=USD))
    chat = {"method": "POST", "url": "/v1/ai/chat", "json": CHAT, "headers": _auth(secret)}

    async def revoke_before_the_second(i: int) -> None:
        if i == 1:
            from asgiref.sync import sync_to_async

            await sync_to_async(keys.revoke_key)(await ProjectKey.objects.aget())

    first, second = _send([chat, chat], between=revoke_before_the_second)
    assert first.status_code == 200
    assert second.status_code == 401 and second.json()["error"]["code"] == "INVALID_API_KEY"


def test_a_call_without_credit_gets_402_with_a_top_up_link_and_holds_nothing():
    account = make_account(credit_nano=0)
    secret = make_key(account)
    (refused,) = _send([{"method": "POST", "url": "/v1/ai/chat", "json": CHAT, "headers": _auth(secret)}])
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "INSUFFICIENT_CREDIT" and error["topup_url"].startswith("http://127.0.0.1/billing/")
    assert not Hold.objects.exists() and ledger.check_consistency() == []


def test_a_long_prompt_is_counted_and_answered(settings):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    long_prompt = "The river runs to the sea. " * 2_000  # counted in a thread, off the event loop
    (answer,) = _send(
        [
            {
                "method": "POST",
                "url": "/v1/ai/chat",
                "json": {**CHAT, "messages": long_prompt},
                "headers": _auth(secret),
            }
        ]
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] > 10_000


def test_a_byok_call_goes_through_the_callers_key(settings):
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    with simulated_upstream() as (url, upstream):
        register, call = _send(
            [
                {
                    "method": "POST",
                    "url": "/v1/account/byok",
                    "json": {
                        "provider": "openai",
                        "alias": "mine",
                        "credentials": {"api_key": "sk-own-key-1234567890", "base_url": url},
                    },
                    "headers": {**_auth(secret), "Idempotency-Key": "byok-1"},
                },
                {
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "json": {"model": "gpt-4o-mini", "messages": "hi"},
                    "headers": _auth(secret),
                },
            ]
        )
    assert register.status_code == 201, register.text
    assert call.status_code == 200, call.text
    assert call.json()["_metadata"]["byok"] is True
    assert upstream.auth_headers == ["Bearer sk-own-key-1234567890"]
