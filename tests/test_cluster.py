"""The `make cluster` deployment (devtools/cluster.py), started the way `make cluster` starts it,
on the test database: 2 daphne processes, 2 job workers and housekeeping behind the balancer.

The cluster needs PostgreSQL and Redis (several processes share the database and the channel
layer); the balancer's own test runs anywhere."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
from django.conf import settings
from django.test import Client

from batches.models import Batch, BatchItem
from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from devtools.balancer import RoundRobinBalancer
from devtools.cluster import free_port
from gateway import catalog
from gateway.models import CatalogModel
from gateway.sandbox import tokens
from tests.factories import make_account, make_key
from tests.live import ROOT, database_env

USD = 1_000_000_000
# max_tokens=1: the sandbox writes exactly one token, so a call costs exactly its hold and the
# number of calls the credit covers is exact, whatever the order they arrive in.
PAID_CALL = {"messages": "Say one word.", "model": "sandbox-chat", "max_tokens": 1}


@dataclass
class Cluster:
    url: str  # the balancer
    web_urls: list[str]  # daphne #1, daphne #2
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def cluster(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Cluster]:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL")
    if "redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower():
        pytest.skip("needs Redis: set REDIS_URL")
    with django_db_blocker.unblock():
        db_env = database_env()
    port, web_ports = free_port(), [free_port(), free_port()]
    log = tmp_path_factory.mktemp("cluster") / "cluster.log"
    env = {
        **os.environ,
        **db_env,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SANDBOX_TOKENS_PER_SECOND": "0",
        "API_RATE_LIMIT_PER_KEY_PER_MINUTE": "0",
        "STRIPE_STANDIN_PORT": str(free_port()),
    }
    command = [sys.executable, "-m", "devtools.cluster", "--port", str(port), "--no-migrate"]
    command += ["--web-ports", ",".join(map(str, web_ports))]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    running = Cluster(f"http://127.0.0.1:{port}", [f"http://127.0.0.1:{p}" for p in web_ports], process, log)
    try:
        deadline = time.monotonic() + 60
        for url in [running.url, *running.web_urls]:
            while True:
                assert process.poll() is None, f"the cluster exited early:\n{log.read_text()}"
                try:
                    httpx.get(url + "/login/", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, f"{url} never answered:\n{log.read_text()}"
                    time.sleep(0.2)
        while log.read_text(errors="replace").count("Starting worker") < 2:
            assert time.monotonic() < deadline, f"the workers did not start:\n{log.read_text()}"
            time.sleep(0.2)
        yield running
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C on `make cluster` does
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


@pytest.fixture
def workers_idle_at_the_end(cluster: Cluster) -> Iterator[None]:
    """Each test ends once the cluster's workers are idle. Its teardown empties the tables, and a
    worker whose running task's row is gone exits (django-tasks-db cannot save the result), which
    stops the whole cluster under the next test (seen in CI: a batch's last run_batch task)."""
    yield
    from django_tasks_db.models import DBTaskResult

    deadline = time.monotonic() + 60
    while DBTaskResult.objects.ready().exists() or DBTaskResult.objects.running().exists():
        assert time.monotonic() < deadline, f"the workers never went idle:\n{cluster.log.read_text()}"
        time.sleep(0.1)


def session_cookie(account) -> str:
    client = Client()
    client.force_login(account.owner)
    return client.cookies["sessionid"].value


async def next_event(socket: aiohttp.ClientWebSocketResponse, timeout: float = 60) -> dict:
    message = await socket.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("workers_idle_at_the_end")
def test_a_page_on_one_process_hears_a_batch_submitted_on_the_other_and_run_by_a_worker(cluster):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    cookie = session_cookie(account)
    web_1, web_2 = cluster.web_urls
    requests = [{"capability": "chat", "body": {"messages": f"Name a river, please ({i})."}} for i in range(3)]

    async def scenario() -> tuple[str, list[dict], list[dict]]:
        async with aiohttp.ClientSession() as session:
            pages = []
            for url in (web_1, cluster.url):  # daphne #1 directly, and whichever the balancer picks
                socket = await session.ws_connect(
                    url.replace("http", "ws") + "/ws/events/", headers={"Origin": url, "Cookie": f"sessionid={cookie}"}
                )
                assert (await next_event(socket))["event"] == "hello"
                pages.append(socket)
            response = await session.post(
                web_2 + "/v1/ai/batch/submit",
                json={"requests": requests},
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert response.status == 200, await response.text()
            batch_id = (await response.json())["batch_id"]
            heard: list[list[dict]] = []
            for socket in pages:
                seen: list[dict] = []
                while not seen or seen[-1]["state"] != "completed":
                    event = await next_event(socket)
                    assert event["event"] == "batch.updated"
                    assert event["payload"]["batch_id"] == batch_id
                    seen.append(event["payload"])
                heard.append(seen)
                await socket.close()
            return batch_id, heard[0], heard[1]

    batch_id, on_web_1, through_balancer = asyncio.run(scenario())
    batch = Batch.objects.get(public_id=batch_id)
    assert batch.state == "completed" and batch.completed_count == 3
    assert on_web_1[-1] == through_balancer[-1]
    assert on_web_1[-1]["completed_count"] == 3
    items = BatchItem.objects.filter(batch=batch)
    # Items are claimed by db_worker processes only; a daphne process never runs them.
    assert all(item.lease_owner and item.attempts == 1 for item in items)
    assert UsageRecord.objects.filter(account=account).count() == 3
    assert not Hold.objects.filter(account=account, state=HoldState.OPEN).exists()
    assert ledger.check_consistency() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("workers_idle_at_the_end")
def test_one_hundred_paid_calls_over_both_processes_spend_exactly_the_credit(cluster):
    entry = CatalogModel.objects.get(model_id="sandbox-chat", capability="chat")
    prompt_tokens = tokens.count_messages([{"role": "user", "content": PAID_CALL["messages"]}])
    cost_per_call = catalog.token_cost_nano(entry, prompt_tokens, PAID_CALL["max_tokens"])
    assert cost_per_call > 0
    affordable = 10
    credit = affordable * cost_per_call + cost_per_call // 2  # not enough for an eleventh
    account = make_account(credit_nano=credit)
    secret = make_key(account)

    lowest_available: list[int] = []
    sampling = threading.Event()

    def sample_balance() -> None:
        from django.db import connection

        try:
            while not sampling.is_set():
                balance = ledger.get_balance(account)
                lowest_available.append(balance.balance_nano - balance.held_nano)
                time.sleep(0.01)
        finally:
            connection.close()

    async def fire() -> list[tuple[int, dict]]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:

            async def one(i: int) -> tuple[int, dict]:
                url = cluster.web_urls[i % 2]
                response = await client.post(
                    url + "/v1/ai/chat", json=PAID_CALL, headers={"Authorization": f"Bearer {secret}"}
                )
                return response.status_code, response.json()

            return await asyncio.gather(*(one(i) for i in range(100)))

    sampler = threading.Thread(target=sample_balance)
    sampler.start()
    try:
        results = asyncio.run(fire())
    finally:
        sampling.set()
        sampler.join()

    statuses = [status for status, _ in results]
    assert statuses.count(200) == affordable and statuses.count(402) == 100 - affordable, statuses
    assert {body["error"]["code"] for status, body in results if status == 402} == {"INSUFFICIENT_CREDIT"}
    assert min(lowest_available) >= 0
    records = UsageRecord.objects.filter(account=account)
    assert [r.cost_nano for r in records] == [cost_per_call] * affordable
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (credit - affordable * cost_per_call, 0)
    assert ledger.check_consistency() == []


async def test_the_balancer_alternates_backends_and_skips_one_that_refuses():
    """The balancer alone (any database): round robin, and a dead backend costs no failed call."""

    async def backend(name: bytes) -> asyncio.Server:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(name), name))
            await writer.drain()
            writer.close()

        return await asyncio.start_server(answer, "127.0.0.1", 0)

    first, second = await backend(b"first"), await backend(b"second")
    dead_port = free_port()
    ports = [server.sockets[0].getsockname()[1] for server in (first, second)]
    balancer = RoundRobinBalancer([("127.0.0.1", ports[0]), ("127.0.0.1", dead_port), ("127.0.0.1", ports[1])])
    front = await asyncio.start_server(balancer.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{front.sockets[0].getsockname()[1]}/"
    try:
        async with httpx.AsyncClient() as client:
            answers = [(await client.get(url, headers={"Connection": "close"})).text for _ in range(4)]
    finally:
        for server in (front, first, second):
            server.close()
    assert answers == ["first", "second", "first", "second"]
