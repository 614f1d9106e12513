"""Faults, end to end, each ending with the ledger checked: no open hold once calls have settled
(or the sweeper has run), `check_consistency()` clean, no call charged twice, and a client retry
with the same idempotency key after a failure charged exactly once.

Here: upstream 429 and 500 with failover and without, an upstream timeout, a stream cut mid-way,
a malformed SSE event (SIMULATED upstreams: tests/fakes/openai_upstream.py, a real HTTP server on
loopback); a private Redis killed under a running daphne and worker; a private PostgreSQL
restarted (and stopped) under two daphne processes with calls in flight: a call while the
database is down answers a JSON 503; an idempotency key whose call died unanswered runs again
if nothing was charged (after the hold's lifetime); a charged call's answer is stored through
the restart, so its retry replays it.

Proven elsewhere, not repeated here:
- a worker killed with SIGKILL mid-item loses nothing and charges nothing twice:
  tests/test_batch_workers.py::test_a_worker_killed_mid_item_loses_nothing_and_nothing_is_charged_twice
  and tests/test_videos.py::test_a_killed_worker_s_job_is_finished_by_another_and_charged_once;
- the sandbox's injected 500 and 429 release the hold: tests/test_chat_api.py
  ::test_an_upstream_failure_is_a_5xx_with_the_reason_and_the_hold_released;
- a client that goes away mid-stream is charged for what was delivered:
  tests/test_stream_disconnect.py;
- 20 concurrent replays of one idempotency key charge once: tests/test_chat_api.py
  ::test_twenty_concurrent_replays_charge_once;
- the rate limiter and the response cache fail open when the cache raises: tests/test_rate_limits.py,
  tests/test_chat_api.py::test_with_the_cache_down_an_infrai_cached_call_still_answers (here: with a
  real Redis server killed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from devtools.cluster import PrivatePostgres, postgres_binary, private_postgres, private_redis
from gateway import http as gateway_http
from tests.factories import bearer, make_account, make_key
from tests.fakes.openai_upstream import Script, simulated_upstream
from tests.live import ROOT, live_servers
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


def session_cookie(account) -> str:
    client = Client()
    client.force_login(account.owner)
    return client.cookies["sessionid"].value


async def websocket_outcome(url: str, cookie: str) -> str:
    """What a page's /ws/events/ connection gets: "open" (its hello), "closed" or "refused"."""
    async with aiohttp.ClientSession() as session:
        try:
            socket = await session.ws_connect(
                url.replace("http", "ws") + "/ws/events/",
                headers={"Origin": url, "Cookie": f"sessionid={cookie}"},
                timeout=aiohttp.ClientWSTimeout(ws_close=10),
            )
        except aiohttp.WSServerHandshakeError:
            return "refused"
        message = await socket.receive(timeout=10)
        await socket.close()
        return "open" if message.type == aiohttp.WSMsgType.TEXT else "closed"


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
            assert asyncio.run(websocket_outcome(url, session_cookie(account))) == "open"

            redis.kill()
            started = time.monotonic()
            after = [httpx.post(url + "/v1/ai/chat", json=cached_call, headers=auth, timeout=30) for _ in range(5)]
            assert [r.status_code for r in after] == [200] * 5
            assert {r.json()["_metadata"]["cache_hit"] for r in after} == {False}, "the cache fails open"
            assert time.monotonic() - started < 15, "a dead Redis must not stall each call"

            # The page's websocket cannot join its group: it is closed at once (not left hanging),
            # and the page polls instead (static/playground/common.js).
            assert asyncio.run(websocket_outcome(url, session_cookie(account))) in {"closed", "refused"}

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


# --- PostgreSQL restarted mid-load ----------------------------------------------------------------

LOAD_EMAIL = "load@example.com"
LOAD_CREDIT_NANO = 5 * USD
LEDGER_REPORT = f"""
import json
from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from console.models import Account
from gateway.models import IdempotencyRecord
account = Account.objects.get(owner__email={LOAD_EMAIL!r})
balance = ledger.get_balance(account)
print(json.dumps({{
    "balance_nano": balance.balance_nano,
    "held_nano": balance.held_nano,
    "charges": {{r.request_id: r.cost_nano for r in UsageRecord.objects.filter(account=account)}},
    "open_holds": Hold.objects.filter(account=account, state=HoldState.OPEN).count(),
    "unfinished_keys": list(
        IdempotencyRecord.objects.filter(account=account, response__isnull=True).values_list("key", flat=True)
    ),
    "discrepancies": [str(d) for d in ledger.check_consistency()],
}}))
"""


@dataclass
class PostgresDeployment:
    server: PrivatePostgres
    urls: list[str]
    secret: str
    env: dict[str, str]
    upstream: Script  # a SIMULATED OpenAI, for calls that must be in flight at a chosen moment
    probes: set[str] = field(default_factory=set)  # request ids of wait_until_serving's calls

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return done.stdout

    def ledger_report(self) -> dict[str, Any]:
        return json.loads(self.manage("shell", "-c", LEDGER_REPORT).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def postgres_deployment(django_db_setup, django_db_blocker) -> Iterator[PostgresDeployment]:
    """Two daphne processes on a private PostgreSQL instance that the test may restart or stop."""
    try:
        postgres_binary("initdb")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with private_postgres() as server, simulated_upstream() as (upstream_url, upstream):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "infrai.settings.base",
            "DATABASE_URL": server.url,
            "REDIS_URL": "",
            "HOLD_TTL_SECONDS": "3",
            "DB_POOL_TIMEOUT": "5",
            "OPENAI_API_KEY": "sk-sim",
            "OPENAI_BASE_URL": upstream_url,
        }
        deployment = PostgresDeployment(server, [], "", env, upstream)
        deployment.manage("migrate", "--noinput")
        deployment.manage("create_account", LOAD_EMAIL, "--credit-usd", str(LOAD_CREDIT_NANO // USD))
        deployment.secret = deployment.manage("create_project_key", LOAD_EMAIL).strip().splitlines()[-1]
        with (
            django_db_blocker.unblock(),
            live_servers(2, {k: env[k] for k in env if k != "DJANGO_SETTINGS_MODULE"}) as urls,
        ):
            deployment.urls = urls
            yield deployment


@dataclass
class Outcome:
    key: str
    status: int
    body: dict[str, Any] | None  # None: not JSON
    started: float
    finished: float = 0.0


async def call_once(client: httpx.AsyncClient, url: str, secret: str, key: str, model: str = "sandbox-chat") -> Outcome:
    started = time.monotonic()
    body = {"messages": f"Say hello ({key}).", "model": model, "max_tokens": 20, "idempotency_key": key}
    response = await client.post(url + "/v1/ai/chat", json=body, headers={"Authorization": f"Bearer {secret}"})
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return Outcome(key, response.status_code, parsed, started, time.monotonic())


def request_id_of(outcome: Outcome) -> str:
    assert outcome.status == 200 and outcome.body is not None, outcome
    meta = outcome.body["_metadata"]
    return meta.get("original_request_id") or meta["request_id"]


def calls(deployment: PostgresDeployment, keys: list[str], model: str = "sandbox-chat") -> list[Outcome]:
    async def all_at_once() -> list[Outcome]:
        async with httpx.AsyncClient(timeout=30) as client:
            urls = deployment.urls
            return list(
                await asyncio.gather(
                    *(
                        call_once(client, urls[i % len(urls)], deployment.secret, key, model)
                        for i, key in enumerate(keys)
                    )
                )
            )

    return asyncio.run(all_at_once())


def wait_until_serving(deployment: PostgresDeployment, timeout: float = 60) -> float:
    """Seconds until a call on every process succeeds again (the pools reconnect with a backoff)."""
    started = time.monotonic()
    for n in itertools.count():
        outcomes = calls(deployment, [f"probe-{started}-{n}-{i}" for i in range(len(deployment.urls))])
        deployment.probes |= {request_id_of(o) for o in outcomes if o.status == 200}
        if all(o.status == 200 for o in outcomes):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, [(o.status, o.body) for o in outcomes]
        time.sleep(0.5)
    raise AssertionError("unreachable")


def test_postgres_restarted_mid_load_loses_nothing_and_charges_nothing_twice(postgres_deployment):
    deployment = postgres_deployment
    charged_before = set(deployment.ledger_report()["charges"])
    warm_up = calls(deployment, [f"warm-up-{i}" for i in range(4)])
    assert [o.status for o in warm_up] == [200] * 4

    async def load() -> tuple[list[Outcome], float]:
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:

            async def caller(worker: int) -> list[Outcome]:
                outcomes, n = [], 0
                while not stop.is_set():
                    url = deployment.urls[(worker + n) % 2]
                    outcomes.append(await call_once(client, url, deployment.secret, f"load-{worker}-{n}"))
                    n += 1
                return outcomes

            callers = [asyncio.create_task(caller(w)) for w in range(12)]
            await asyncio.sleep(2)
            restarting_at = time.monotonic()
            await asyncio.to_thread(deployment.server.restart)
            restarted_at = time.monotonic()
            await asyncio.sleep(2)
            stop.set()
            outcomes = [o for outcomes in await asyncio.gather(*callers) for o in outcomes]
            return outcomes, restarting_at, restarted_at

    outcomes, restarting_at, restarted_at = asyncio.run(load())
    failed = [o for o in outcomes if o.status != 200]
    failed_after = [o for o in failed if o.started > restarted_at]
    across = [o for o in outcomes if o.started < restarting_at < o.finished]
    print(
        f"{len(outcomes)} calls, {len(across)} in flight as the restart began, {len(failed)} failed "
        f"({len(failed_after)} of them sent after the restart)"
    )
    # Calls in flight may fail (their connection died) or survive (they waited for a connection
    # until PostgreSQL was back); either way the ledger below must balance.
    assert across, "the restart happened while calls were in flight"
    # Whether the body is a JSON error: test_with_postgres_down_a_call_gets_a_json_503_not_an_html_page.
    assert all(o.status >= 500 for o in failed), [(o.status, o.body) for o in failed]
    fresh = calls(deployment, [f"after-{i}" for i in range(10)])
    assert [o.status for o in fresh] == [200] * 10, [(o.status, o.body) for o in fresh]
    # The client retries each failed call with its key: never charged a second time. (Answered?
    # Not always yet: test_a_call_charged_just_before_the_restart_is_answered_on_retry.)
    retried = calls(deployment, [o.key for o in failed])
    assert {o.status for o in retried} <= {200, 409}, [(o.status, o.body) for o in retried]

    time.sleep(3.5)  # HOLD_TTL_SECONDS: a hold whose call died with its connection is swept after it
    deployment.manage("housekeeping")
    report = deployment.ledger_report()
    charged = set(report["charges"]) - charged_before
    answered = {request_id_of(o) for o in warm_up + outcomes + fresh + retried if o.status == 200}
    assert answered <= charged, "every answered call is charged"
    assert len(charged) <= len(warm_up) + len(outcomes) + len(fresh), "no call, retried or not, charged twice"
    print(f"{len(retried)} retried: {sorted(o.status for o in retried)}; {len(charged - answered)} charged unanswered")
    assert (report["open_holds"], report["held_nano"], report["discrepancies"]) == (0, 0, [])
    assert report["balance_nano"] == LOAD_CREDIT_NANO - sum(report["charges"].values())


def test_after_a_restart_the_first_calls_on_each_process_succeed(postgres_deployment):
    """The pools hold connections the restart killed; each is checked before use, not handed out."""
    deployment = postgres_deployment
    warm_up = calls(deployment, [f"idle-warm-up-{i}" for i in range(8)])
    assert [o.status for o in warm_up] == [200] * 8
    deployment.server.restart()
    after = calls(deployment, [f"idle-after-{i}" for i in range(8)])
    assert [o.status for o in after] == [200] * 8, [(o.status, o.body) for o in after]


def test_with_postgres_down_a_call_gets_a_json_503_not_an_html_page(postgres_deployment):
    deployment = postgres_deployment
    deployment.server.stop()
    try:
        started = time.monotonic()
        (outcome,) = calls(deployment, ["while-down"])
        assert time.monotonic() - started < 15, "DB_POOL_TIMEOUT bounds the wait"
    finally:
        deployment.server.start()
        print(f"serving again {wait_until_serving(deployment):.1f} s after PostgreSQL came back")
    assert outcome.status == 503, outcome
    assert outcome.body is not None and outcome.body["error"]["code"]


def test_a_call_cut_before_its_charge_is_released_and_its_retry_is_answered_once(postgres_deployment):
    deployment = postgres_deployment
    charged_before = set(deployment.ledger_report()["charges"])

    async def in_flight_across_an_outage() -> Outcome:
        # The balance row locked by another session: the call claims its key, then waits on the
        # lock to take its hold, so the outage lands mid-statement, deterministically.
        blocker = await psycopg.AsyncConnection.connect(deployment.server.url)
        try:
            await blocker.execute("SELECT 1 FROM billing_creditbalance FOR UPDATE")
            async with httpx.AsyncClient(timeout=30) as client:
                call = asyncio.create_task(call_once(client, deployment.urls[0], deployment.secret, "across-outage"))
                await asyncio.sleep(1)
                await asyncio.to_thread(deployment.server.stop)
                return await call
        finally:
            await blocker.close()  # its session went with the outage

    try:
        first = asyncio.run(in_flight_across_an_outage())
    finally:
        deployment.server.start()
    assert first.status >= 500, "the call lost its database connection"
    print(f"serving again {wait_until_serving(deployment):.1f} s after PostgreSQL came back")
    time.sleep(3.5)  # the hold expires and is swept
    deployment.manage("housekeeping")
    retries = [calls(deployment, ["across-outage"])[0] for _ in range(2)]
    assert [o.status for o in retries] == [200, 200], [(o.status, o.body) for o in retries]
    assert retries[1].body["_metadata"]["replayed"] is True
    report = deployment.ledger_report()
    assert (report["open_holds"], report["held_nano"], report["discrepancies"], report["unfinished_keys"]) == (
        0,
        0,
        [],
        [],
    )
    assert set(report["charges"]) - charged_before - deployment.probes == {request_id_of(retries[0])}


def test_a_call_charged_just_before_the_restart_is_answered_on_retry(postgres_deployment):
    deployment = postgres_deployment
    wait_until_serving(deployment)
    charged_before = set(deployment.ledger_report()["charges"])
    key = "charged-then-restart"

    async def restart_between_charge_and_answer() -> Outcome:
        # The (simulated) upstream takes 2 s; meanwhile another session locks the call's
        # idempotency record, so the call charges, then waits to store its answer: the restart
        # lands between the two, deterministically.
        locker = await psycopg.AsyncConnection.connect(deployment.server.url)
        deployment.upstream.delay = 2.0
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                call = asyncio.create_task(
                    call_once(client, deployment.urls[0], deployment.secret, key, model="gpt-4o-mini")
                )
                while True:  # lock the record as soon as the call has claimed its key
                    locked = await locker.execute(
                        "SELECT 1 FROM gateway_idempotencyrecord WHERE key = %s FOR UPDATE", [key]
                    )
                    if locked.rowcount == 1:
                        break
                    await locker.rollback()
                    assert not call.done(), await call
                    await asyncio.sleep(0.05)
                await asyncio.sleep(3)  # the upstream answers after 2 s; the call charges, then waits
                await asyncio.to_thread(deployment.server.restart)
                return await call
        finally:
            deployment.upstream.delay = 0
            await locker.close()

    first = asyncio.run(restart_between_charge_and_answer())
    print(f"serving again {wait_until_serving(deployment):.1f} s after the restart")
    time.sleep(3.5)
    deployment.manage("housekeeping")
    retries = [calls(deployment, [key], model="gpt-4o-mini")[0] for _ in range(2)]
    report = deployment.ledger_report()
    assert (report["open_holds"], report["discrepancies"]) == (0, [])
    charged_now = set(report["charges"]) - charged_before - deployment.probes
    assert len(charged_now) == 1, "charged exactly once"
    answers = [o for o in [first, *retries] if o.status == 200]
    assert answers, [(o.status, o.body) for o in [first, *retries]]
    assert {request_id_of(o) for o in answers} == charged_now
