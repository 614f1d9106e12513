"""Faults, end to end, each ending with the ledger checked: no open hold once calls have settled
(or the sweeper has run), `check_consistency()` clean, every call charged at most once, and a
client retry with the same idempotency key after a failure charged exactly once.

Upstreams here are SIMULATED (tests/fakes/openai_upstream.py, a real HTTP server on loopback).

Proven elsewhere, not repeated here:
- a worker killed with SIGKILL mid-item loses nothing and charges nothing twice:
  tests/test_batch_workers.py::test_a_worker_killed_mid_item_loses_nothing_and_nothing_is_charged_twice
  and tests/test_videos.py (the same for video jobs);
- the sandbox's injected 500 and 429 release the hold: tests/test_chat_api.py
  ::test_an_upstream_failure_is_a_5xx_with_the_reason_and_the_hold_released;
- a client that goes away mid-stream is charged for what was delivered:
  tests/test_stream_disconnect.py;
- 20 concurrent replays of one idempotency key charge once: tests/test_chat_api.py
  ::test_twenty_concurrent_replays_charge_once;
- the rate limiter and the response cache fail open with the cache raising: tests/test_rate_limits.py,
  tests/test_chat_api.py::test_with_the_cache_down_an_infrai_cached_call_still_answers (here: with a
  real Redis server killed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from devtools.cluster import private_redis
from gateway import http as gateway_http
from tests.factories import bearer, make_account, make_key
from tests.fakes.openai_upstream import Script, simulated_upstream
from tests.live import live_servers
from tests.test_batch_workers import workers

USD = 1_000_000_000
# gpt-4o-mini (openai) ranks first for "cheapest"; deepseek-chat (openai_compatible) costs under
# 5x its worst case and over 1x: a cap of 5 lets it stand in, a cap of 1 does not.
WITH_FAILOVER = {"prefer": "cheapest", "max_tokens": 100, "max_cost_multiplier": 5}
WITHOUT_FAILOVER = {"prefer": "cheapest", "max_tokens": 100, "max_cost_multiplier": 1}


def assert_ledger_clean(account, credit_nano: int, calls_charged: int) -> None:
    """No open hold, the balance is the credit less exactly the recorded charges, the ledger agrees."""
    records = list(UsageRecord.objects.filter(account=account))
    assert len(records) == calls_charged
    assert len({r.request_id for r in records}) == len(records), "a request charged twice"
    assert not Hold.objects.filter(account=account, state=HoldState.OPEN).exists()
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (credit_nano - sum(r.cost_nano for r in records), 0)
    assert ledger.check_consistency() == []


@contextmanager
def two_vendors(settings, failing: Script) -> Iterator[tuple[Script, Script]]:
    """OpenAI answering with `failing`'s script, the OpenAI-compatible vendor healthy (both simulated)."""
    with simulated_upstream(failing) as (failing_url, _), simulated_upstream() as (ok_url, ok):
        settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-sim", failing_url
        settings.OPENAI_COMPATIBLE_API_KEY, settings.OPENAI_COMPATIBLE_BASE_URL = "sim", ok_url
        yield failing, ok


def chat(secret: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = Client().post("/v1/ai/chat", json.dumps(body), content_type="application/json", **bearer(secret))
    return response.status_code, response.json()


async def stream(secret: str, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    response = await AsyncClient().post(
        "/v1/ai/chat",
        json.dumps({**body, "stream": True}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    if not response.streaming:
        return response.status_code, [json.loads(response.content)]
    events = []
    async for chunk in response.streaming_content:
        for line in chunk.decode().splitlines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    return response.status_code, events


def deltas(events: list[dict[str, Any]]) -> list[str]:
    return [e["delta"] for e in events if "delta" in e]


# --- Upstream 429 / 500, with and without failover ----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("upstream_status", "status", "code"), [(429, 503, "UPSTREAM_RATE_LIMITED"), (500, 502, "UPSTREAM_UNAVAILABLE")]
)
def test_an_upstream_error_fails_over_or_is_refused_and_a_retry_is_charged_once(
    settings, upstream_status, status, code
):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    with two_vendors(settings, Script(status=upstream_status)) as (failing, ok):
        served, body = chat(secret, {"messages": "hi", **WITH_FAILOVER})
        assert served == 200 and body["_metadata"]["vendor"] == "openai_compatible"
        assert len(failing.requests) == 1 and len(ok.requests) == 1
        assert_ledger_clean(account, USD, calls_charged=1)

        refused, error = chat(secret, {"messages": "hi", "idempotency_key": "retry-me", **WITHOUT_FAILOVER})
        assert refused == status and error["error"]["code"] == code
        assert len(ok.requests) == 1, "no stand-in within a cost cap of 1x"
        assert_ledger_clean(account, USD, calls_charged=1)

        failing.status = 200  # the upstream recovers; the client retries with its key
        retried, body = chat(secret, {"messages": "hi", "idempotency_key": "retry-me", **WITHOUT_FAILOVER})
        assert retried == 200 and body["_metadata"]["vendor"] == "openai"
        again, replay = chat(secret, {"messages": "hi", "idempotency_key": "retry-me", **WITHOUT_FAILOVER})
        assert again == 200 and replay["_metadata"]["replayed"] is True
        assert replay["_metadata"]["cost_usd"] == "0.00"
    assert_ledger_clean(account, USD, calls_charged=2)


# --- Upstream timeout -------------------------------------------------------------------------------


@pytest.fixture
def short_upstream_timeout(monkeypatch) -> float:
    """Vendor calls time out after half a second instead of two minutes: the default timeout of
    the HTTP seam's clients (each test request runs on a fresh event loop, so gets fresh clients)."""
    seconds = 0.5
    assert gateway_http.client_for.__defaults__ == (gateway_http.DEFAULT_TIMEOUT,)
    monkeypatch.setattr(gateway_http.client_for, "__defaults__", (httpx.Timeout(seconds),))
    return seconds


@pytest.mark.django_db
def test_an_upstream_that_does_not_answer_times_out_fails_over_and_charges_nothing_for_the_silence(
    settings, short_upstream_timeout
):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    with two_vendors(settings, Script(delay=short_upstream_timeout * 4)) as (slow, ok):
        refused, error = chat(secret, {"messages": "hi", "idempotency_key": "slow", **WITHOUT_FAILOVER})
        assert refused == 504 and error["error"]["code"] == "UPSTREAM_TIMEOUT"
        assert_ledger_clean(account, USD, calls_charged=0)

        served, body = chat(secret, {"messages": "hi", **WITH_FAILOVER})
        assert served == 200 and body["_metadata"]["vendor"] == "openai_compatible"
        assert len(slow.requests) == 2 and len(ok.requests) == 1
        assert_ledger_clean(account, USD, calls_charged=1)

        slow.delay = 0
        retried, body = chat(secret, {"messages": "hi", "idempotency_key": "slow", **WITHOUT_FAILOVER})
        assert retried == 200 and body["_metadata"]["vendor"] == "openai"
    assert_ledger_clean(account, USD, calls_charged=2)


# --- Streams: cut mid-way, malformed events -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("fault", "delivered_words"),
    [({"cut_after": 3}, 3), ({"malformed": True}, 1)],
    ids=["cut-mid-way", "malformed-event"],
)
async def test_a_broken_stream_is_charged_for_what_was_delivered_and_its_retry_once(settings, fault, delivered_words):
    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    script = Script(reply="one two three four five six seven eight", **fault)
    body = {"messages": "count", "model": "gpt-4o-mini", "idempotency_key": "broken-stream"}
    with two_vendors(settings, script):
        status, events = await stream(secret, body)
        assert status == 200
        assert "".join(deltas(events)) == " ".join(script.reply.split()[:delivered_words])
        assert events[-1]["error"]["vendor"] == "openai" and events[-1]["error"]["code"]
        cut = await UsageRecord.objects.aget(account=account)
        assert cut.status == "cut" and cut.cost_nano > 0
        await sync_to_async(assert_ledger_clean)(account, USD, 1)

        script.cut_after, script.malformed = None, False
        _, retried = await stream(secret, body)
        assert "".join(deltas(retried)) == script.reply
        assert not retried[-1]["_metadata"].get("replayed")
        assert await UsageRecord.objects.filter(account=account).acount() == 2
        _, replayed = await stream(secret, body)
        assert "".join(deltas(replayed)) == script.reply
        assert replayed[-1]["_metadata"]["replayed"] is True and replayed[-1]["_metadata"]["cost_usd"] == "0.00"
    assert len(script.requests) == 2, "the replay did not call the upstream"
    await sync_to_async(assert_ledger_clean)(account, USD, 2)


# --- Redis unavailable --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_redis_killed_the_api_keeps_serving_and_a_jobs_page_falls_back_to_polling(tmp_path):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    auth = {"Authorization": f"Bearer {secret}"}
    cached_call = {"messages": "Name a colour.", "cache_strategy": "infrai"}
    with private_redis() as redis:
        live = {"REDIS_URL": redis.url, "API_RATE_LIMIT_PER_KEY_PER_MINUTE": "600"}
        with live_servers(1, live) as (url,), workers(1, tmp_path, {"REDIS_URL": redis.url}):
            first = httpx.post(url + "/v1/ai/chat", json=cached_call, headers=auth, timeout=30)
            hit = httpx.post(url + "/v1/ai/chat", json=cached_call, headers=auth, timeout=30)
            assert first.status_code == hit.status_code == 200
            assert hit.json()["_metadata"]["cache_hit"] is True, "the cache is Redis, and it is up"

            redis.kill()
            started = time.monotonic()
            after = [httpx.post(url + "/v1/ai/chat", json=cached_call, headers=auth, timeout=30) for _ in range(5)]
            assert [r.status_code for r in after] == [200] * 5
            assert {r.json()["_metadata"]["cache_hit"] for r in after} == {False}, "the cache fails open"
            assert time.monotonic() - started < 15, "a dead Redis must not stall each call"

            submitted = httpx.post(
                url + "/v1/ai/batch/submit",
                json={"requests": [{"capability": "chat", "body": {"messages": "hi"}}] * 2},
                headers=auth,
                timeout=30,
            )
            assert submitted.status_code == 200, submitted.text
            batch_id = submitted.json()["batch_id"]
            deadline = time.monotonic() + 60
            while True:  # what a page does when its websocket cannot deliver
                status = httpx.get(url + f"/v1/ai/batch/status/{batch_id}", headers=auth, timeout=30)
                assert status.status_code == 200, status.text
                if status.json()["state"] == "completed":
                    break
                assert time.monotonic() < deadline, status.json()
                time.sleep(0.2)
    worker_log = (tmp_path / "worker-0.log").read_text(errors="replace")
    assert "could not push a live update" in worker_log
    assert_ledger_clean(account, USD, calls_charged=2 + 5 + 2)
