"""Batches on real `manage.py db_worker` processes sharing the test database: two workers never
run an item twice, a worker killed with SIGKILL loses nothing, and the owner's page hears it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import timezone

from batches.models import Batch, BatchItem
from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from infrai.lib.money import format_usd
from tests.factories import bearer, make_account, make_key
from tests.live import ROOT, database_env

USD = 1_000_000_000
# Sandbox speech is paced by real work (espeak-ng, then MP3 encoding): ~0.1 s per 100 characters
# here. The sandbox's non-streaming chat ignores SANDBOX_TOKENS_PER_SECOND, so it cannot be slowed.
SHORT_SPEECH = {"capability": "tts", "body": {"input": "Batches share the work between workers.", "format": "mp3"}}
LONG_SPEECH = {"capability": "tts", "body": {"input": "The quick brown fox jumps over the lazy dog. " * 60}}


@contextmanager
def workers(count: int, log_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[list[subprocess.Popen]]:
    """`count` db_worker processes on the test database, yielded once each is polling."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infrai.settings.base",
        "DEBUG": "false",
        **database_env(),
        **(extra_env or {}),
    }
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        for i in range(count):
            logs.append(log_dir / f"worker-{i}.log")
            command = [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--no-reload"]
            command += ["--interval", "0.1", "--worker-id", f"test-worker-{i}"]
            procs.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(logs[-1], "wb"))
            )
        deadline = time.monotonic() + 60
        for proc, log in zip(procs, logs, strict=True):
            while "Starting worker" not in log.read_text(errors="replace"):
                assert proc.poll() is None, f"db_worker exited early:\n{log.read_text()}"
                assert time.monotonic() < deadline, "db_worker did not start"
                time.sleep(0.1)
        yield procs
    finally:
        stop(procs)


@contextmanager
def housekeeping(log_dir: Path, extra_env: dict[str, str]) -> Iterator[subprocess.Popen]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infrai.settings.base",
        "DEBUG": "false",
        **database_env(),
        **extra_env,
    }
    command = [sys.executable, "manage.py", "housekeeping", "--loop", "--interval", "0.5"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(log_dir / "housekeeping.log", "wb")
    )
    try:
        yield proc
    finally:
        stop([proc])


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def submit(account, requests: list[dict]) -> str:
    client = Client()
    response = client.post(
        "/v1/ai/batch/submit",
        json.dumps({"requests": requests}),
        content_type="application/json",
        **bearer(make_key(account)),
    )
    assert response.status_code == 200, response.content
    return response.json()["batch_id"]


def wait_until_finished(batch_id: str, timeout: float = 120) -> Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = Batch.objects.get(public_id=batch_id)
        if batch.state not in ("queued", "running"):
            return batch
        time.sleep(0.1)
    counts = list(BatchItem.objects.filter(batch__public_id=batch_id).values_list("index", "state", "lease_owner"))
    raise AssertionError(f"batch {batch_id} did not finish: {counts}")


def pid_of(lease_owner: str) -> int:
    return int(lease_owner.split(":")[1])


def assert_each_item_charged_once(account, batch: Batch) -> None:
    items = list(BatchItem.objects.filter(batch=batch).select_related("hold"))
    assert {item.state for item in items} == {"succeeded"}
    records = UsageRecord.objects.filter(account=account)
    assert sorted(records.values_list("request_id", flat=True)) == sorted(item.request_id for item in items)
    for item in items:
        assert item.hold.state == HoldState.SETTLED and item.hold.charged_nano == item.cost_nano > 0
    assert batch.total_cost_nano == sum(record.cost_nano for record in records)
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (USD - batch.total_cost_nano, 0)
    assert not Hold.objects.filter(account=account, state=HoldState.OPEN).exists()
    assert ledger.check_consistency() == []


@pytest.mark.django_db(transaction=True)
def test_two_workers_share_one_batch_and_run_every_item_exactly_once(on_postgres, tmp_path):
    account = make_account(credit_nano=USD)
    with workers(2, tmp_path) as procs:
        batch_id = submit(account, [SHORT_SPEECH] * 12)
        batch = wait_until_finished(batch_id)
    assert (batch.state, batch.completed_count, batch.failed_count) == ("completed", 12, 0)
    items = BatchItem.objects.filter(batch=batch)
    assert {item.attempts for item in items} == {1}, "no item was claimed twice"
    assert {pid_of(item.lease_owner) for item in items} == {proc.pid for proc in procs}, "both workers took items"
    assert_each_item_charged_once(account, batch)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_item_loses_nothing_and_nothing_is_charged_twice(on_postgres, tmp_path):
    account = make_account(credit_nano=USD)
    lease = {"JOB_LEASE_SECONDS": "3"}
    with workers(2, tmp_path, lease) as procs, housekeeping(tmp_path, lease):
        victim, survivor = procs
        batch_id = submit(account, [LONG_SPEECH] * 4)
        deadline = time.monotonic() + 60
        while True:
            # An item the victim started a moment ago: it is surely mid-call when the signal lands.
            running = BatchItem.objects.filter(
                batch__public_id=batch_id,
                state="running",
                lease_owner__contains=f":{victim.pid}:",
                started_at__gt=timezone.now() - timezone.timedelta(seconds=0.3),
            ).first()
            if running is not None:
                break
            assert time.monotonic() < deadline, "the victim never started an item"
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        batch = wait_until_finished(batch_id)
    assert (batch.state, batch.completed_count) == ("completed", 4)
    running.refresh_from_db()
    assert running.state == "succeeded" and running.attempts == 2
    assert pid_of(running.lease_owner) == survivor.pid
    assert UsageRecord.objects.filter(request_id=running.request_id).count() == 1
    assert BatchItem.objects.filter(batch=batch, attempts__gt=1).count() == 1, "only the killed item ran again"
    assert_each_item_charged_once(account, batch)


@pytest.mark.django_db(transaction=True)
async def test_the_owners_page_hears_a_worker_finish_the_batch(tmp_path):
    if "redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower():
        pytest.skip("needs REDIS_URL: the in-memory channel layer cannot carry events from a worker process")
    from infrai.asgi import application

    account = await sync_to_async(make_account)(credit_nano=USD)

    def session_cookie() -> str:
        client = Client()
        client.force_login(account.owner)
        return client.cookies["sessionid"].value

    cookie = await sync_to_async(session_cookie)()
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"cookie", f"sessionid={cookie}".encode())]
    page = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    assert (await page.connect())[0]
    assert (await page.receive_json_from())["event"] == "hello"
    running = workers(1, tmp_path)
    await sync_to_async(running.__enter__)()
    try:
        batch_id = await sync_to_async(submit)(account, [SHORT_SPEECH] * 3)
        seen = []
        while not seen or seen[-1]["state"] != "completed":
            message = await page.receive_json_from(timeout=60)
            assert message["event"] == "batch.updated"
            seen.append(message["payload"])
    finally:
        await sync_to_async(running.__exit__)(None, None, None)
        await page.disconnect()
    batch = await Batch.objects.aget(public_id=batch_id)
    # "completed" is sent by the worker process only (after its last item commits).
    assert seen[-1] == {
        "batch_id": batch_id,
        "state": "completed",
        "progress": 1.0,
        "completed_count": 3,
        "failed_count": 0,
        "total_cost_usd": format_usd(batch.total_cost_nano),
    }
