"""ai.batch.*: submit, run (the task function called in-process), status, results, list, cancel,
timeout, export, retention, isolation. Multi-process workers are in tests/test_batch_workers.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.core.files.storage import default_storage
from django.utils import timezone

from batches import batch as rules
from batches.models import Batch, BatchExport, BatchItem
from batches.tasks import run_batch
from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from infrai.lib.money import usd_to_nano
from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db
USD = 1_000_000_000

CHAT = {"capability": "chat", "body": {"messages": "Name three rivers.", "model": "sandbox-chat", "max_tokens": 64}}
EMBED = {"capability": "embed", "body": {"input": ["a cat sat", "tax law"], "model": "sandbox-embed"}}
RERANK = {"capability": "rerank", "body": {"query": "cats", "documents": ["a cat sat", "tax law", "dogs"]}}
IMAGE = {"capability": "image", "body": {"prompt": "a red fox", "size": "256x256", "n": 2}}
TTS = {"capability": "tts", "body": {"input": "Hello from a batch.", "format": "wav"}}


@pytest.fixture
def funded():
    account = make_account(credit_nano=USD)
    return account, make_key(account)


@pytest.fixture
def outsider():
    account = make_account("mallory@example.com", credit_nano=USD)
    return account, make_key(account)


def post(client, path, body, secret, **headers):
    return client.post("/v1" + path, json.dumps(body), content_type="application/json", **bearer(secret), **headers)


def get(client, path, secret):
    return client.get("/v1" + path, **bearer(secret))


def submit(client, secret, requests, **extra):
    response = post(client, "/ai/batch/submit", {"requests": requests, **extra}, secret)
    assert response.status_code == 200, response.content
    return response.json()


def run(batch_id: str) -> dict[str, int]:
    """What a db_worker does with one of the batch's tasks, in this process."""
    return run_batch.call(batch_id)


def status(client, secret, batch_id):
    response = get(client, f"/ai/batch/status/{batch_id}", secret)
    assert response.status_code == 200, response.content
    return response.json()


def all_results(client, secret, batch_id, limit=200):
    return get(client, f"/ai/batch/results/{batch_id}?limit={limit}", secret).json()["items"]


def fetch(client, url: str):
    return client.get(url.split("testserver", 1)[1])


def assert_billed_exactly_once(account) -> None:
    items = BatchItem.objects.filter(batch__account=account)
    for item in items:
        records = UsageRecord.objects.filter(request_id=item.request_id)
        if item.state == "succeeded":
            assert records.count() == 1 and records.get().cost_nano == item.cost_nano
            assert item.hold.state == HoldState.SETTLED and item.hold.charged_nano == item.cost_nano
        else:
            assert not records.exists() and item.cost_nano == 0
            assert item.hold.state == HoldState.RELEASED
    balance = ledger.get_balance(account)
    assert balance.held_nano == sum(h.amount_nano for h in Hold.objects.filter(account=account, state="open"))
    assert ledger.check_consistency() == []


# --- Submit -------------------------------------------------------------------------------------


def test_submit_answers_a_queued_batch_and_holds_credit_for_every_item(client, funded):
    account, secret = funded
    answer = submit(client, secret, [CHAT, EMBED, RERANK], metadata={"job": "nightly"})
    assert answer["batch_id"].startswith("batch_")
    assert answer["state"] == "queued" and answer["total_count"] == 3
    assert answer["estimated_eta"] and answer["estimated_cost_usd"]
    batch = Batch.objects.get(public_id=answer["batch_id"])
    holds = Hold.objects.filter(account=account, state=HoldState.OPEN)
    assert holds.count() == 3
    assert (
        ledger.get_balance(account).held_nano == batch.estimated_cost_nano == usd_to_nano(answer["estimated_cost_usd"])
    )
    assert status(client, secret, answer["batch_id"])["metadata"] == {"job": "nightly"}


def test_submit_enqueues_tasks_up_to_the_parallel_limit(client, funded, settings, django_capture_on_commit_callbacks):
    from django_tasks_db.models import DBTaskResult

    _, secret = funded
    settings.BATCH_MAX_PARALLEL_TASKS = 2
    with django_capture_on_commit_callbacks(execute=True):
        answer = submit(client, secret, [RERANK] * 5)
    tasks = DBTaskResult.objects.filter(task_path="batches.tasks.run_batch")
    assert [t.args_kwargs["args"] for t in tasks] == [[answer["batch_id"]]] * 2
    with django_capture_on_commit_callbacks(execute=True):
        submit(client, secret, [RERANK])
    assert tasks.all().count() == 3


def test_the_seeds_empty_example_is_a_batch_with_nothing_to_do(client, funded):
    _, secret = funded
    answer = submit(client, secret, [])
    assert answer["state"] == "completed" and answer["total_count"] == 0
    assert status(client, secret, answer["batch_id"])["progress"] == 1.0


BAD_ITEMS = [
    ({"capability": "video", "body": {}}, "requests[1].capability"),
    ({"body": {"input": "x"}}, "requests[1].capability"),
    ({"capability": "embed"}, "requests[1].body"),
    ({"capability": "embed", "body": "text"}, "requests[1].body"),
    ("chat please", "requests[1]"),
    ({"capability": "embed", "body": {}}, "requests[1].body.input"),
    ({"capability": "embed", "body": {"input": ["ok", ""]}}, "requests[1].body.input[1]"),
    (
        {"capability": "chat", "body": {"messages": [{"role": "robot", "content": "hi"}]}},
        "requests[1].body.messages[0].role",
    ),
    ({"capability": "chat", "body": {"messages": "hi", "stream": True}}, "requests[1].body.stream"),
    ({"capability": "chat", "body": {"messages": "hi", "model": "no-such-model"}}, "requests[1].body.model"),
    ({"capability": "image", "body": {"prompt": "x", "n": 9}}, "requests[1].body.n"),
    ({"capability": "tts", "body": {"input": "x", "format": "aiff"}}, "requests[1].body.format"),
    ({"capability": "rerank", "body": {"query": "q", "documents": []}}, "requests[1].body.documents"),
    ({"capability": "chat", "body": {"messages": "hi"}, "conversation_id": 7}, "requests[1].conversation_id"),
]


@pytest.mark.parametrize(("item", "field"), BAD_ITEMS, ids=[f for _, f in BAD_ITEMS])
def test_a_bad_item_is_refused_with_its_index_and_field_and_nothing_is_created(client, funded, item, field):
    account, secret = funded
    response = post(client, "/ai/batch/submit", {"requests": [CHAT, item, EMBED]}, secret)
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "INVALID_BATCH_ITEM"
    assert error["index"] == 1 and error["field"] == field and error["message"]
    assert not Batch.objects.exists() and not BatchItem.objects.exists()
    assert not Hold.objects.filter(account=account).exists()
    assert ledger.get_balance(account).held_nano == 0


def test_requests_is_required_a_list_and_bounded(client, funded, settings):
    _, secret = funded
    missing = post(client, "/ai/batch/submit", {}, secret)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "MISSING_FIELD" and missing.json()["error"]["field"] == "requests"
    assert post(client, "/ai/batch/submit", {"requests": {}}, secret).json()["error"]["field"] == "requests"
    settings.BATCH_MAX_ITEMS = 2
    too_many = post(client, "/ai/batch/submit", {"requests": [EMBED] * 3}, secret)
    assert too_many.status_code == 400 and too_many.json()["error"]["field"] == "requests"
    assert not Batch.objects.exists()


@pytest.mark.parametrize("value", ["soon", "24", "0s", "59s", "8d", "-1h", 3600, "1.5h"])
def test_a_bad_batch_timeout_is_a_400_naming_it(client, funded, value):
    _, secret = funded
    response = post(client, "/ai/batch/submit", {"requests": [EMBED], "batch_timeout": value}, secret)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == "batch_timeout"
    assert not Batch.objects.exists()


@pytest.mark.parametrize(("value", "seconds"), [("90m", 5400), ("3600s", 3600), ("24h", 86400), ("7d", 604800)])
def test_batch_timeout_sets_the_deadline(client, funded, value, seconds):
    _, secret = funded
    answer = submit(client, secret, [EMBED], batch_timeout=value)
    batch = Batch.objects.get(public_id=answer["batch_id"])
    assert batch.deadline_at - batch.created_at == timedelta(seconds=seconds)
    assert status(client, secret, batch.public_id)["batch_timeout"] == value


def test_without_credit_for_every_item_it_is_a_402_and_nothing_is_created(client):
    account = make_account(credit_nano=1000)
    secret = make_key(account)
    response = post(client, "/ai/batch/submit", {"requests": [CHAT, CHAT]}, secret)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "INSUFFICIENT_CREDIT"
    assert {"balance_usd", "available_usd", "required_usd", "topup_url"} <= set(error)
    assert error["available_usd"] == "0.000001"
    assert "/billing/?amount_usd=" in error["topup_url"]
    assert not Batch.objects.exists() and not Hold.objects.exists()


def test_a_retry_with_the_same_idempotency_key_returns_the_same_batch(client, funded):
    account, secret = funded
    body = {"requests": [EMBED, RERANK], "idempotency_key": "nightly-1"}
    first = post(client, "/ai/batch/submit", body, secret).json()
    again = post(client, "/ai/batch/submit", body, secret).json()
    assert again["batch_id"] == first["batch_id"] and again["_metadata"]["replayed"] is True
    assert Batch.objects.count() == 1 and Hold.objects.filter(account=account).count() == 2
    by_header = post(client, "/ai/batch/submit", {"requests": [EMBED]}, secret, HTTP_IDEMPOTENCY_KEY="h-1").json()
    assert (
        post(client, "/ai/batch/submit", {"requests": [EMBED]}, secret, HTTP_IDEMPOTENCY_KEY="h-1").json()["batch_id"]
        == (by_header["batch_id"])
    )
    reused = post(client, "/ai/batch/submit", {**body, "requests": [EMBED]}, secret)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert Batch.objects.count() == 2


def test_a_refused_submit_does_not_burn_its_idempotency_key(client, funded):
    _, secret = funded
    bad = {"requests": [{"capability": "embed", "body": {}}], "idempotency_key": "k-1"}
    assert post(client, "/ai/batch/submit", bad, secret).status_code == 422
    good = {"requests": [EMBED], "idempotency_key": "k-1"}
    assert post(client, "/ai/batch/submit", good, secret).status_code == 200


# --- Running ------------------------------------------------------------------------------------


def test_the_task_runs_every_capability_and_bills_each_item_once(client, funded):
    account, secret = funded
    answer = submit(client, secret, [CHAT, EMBED, IMAGE, TTS, RERANK])
    assert run(answer["batch_id"]) == {"succeeded": 5}
    assert run(answer["batch_id"]) == {}, "nothing is left to run twice"
    done = status(client, secret, answer["batch_id"])
    assert done["state"] == "completed" and done["progress"] == 1.0
    assert (done["completed_count"], done["failed_count"]) == (5, 0)
    records = UsageRecord.objects.filter(account=account)
    assert records.count() == 5
    assert usd_to_nano(done["total_cost_usd"]) == sum(r.cost_nano for r in records) > 0
    assert ledger.get_balance(account).balance_nano == USD - usd_to_nano(done["total_cost_usd"])
    assert_billed_exactly_once(account)

    chat, embed, image, tts, rerank = all_results(client, secret, answer["batch_id"])
    assert [i["state"] for i in (chat, embed, image, tts, rerank)] == ["succeeded"] * 5
    assert chat["result"]["content"] and chat["result"]["usage"]["completion_tokens"] > 0
    assert chat["vendor"] == "sandbox" and usd_to_nano(chat["cost_usd"]) > 0
    assert len(embed["result"]["embeddings"]) == 2
    assert len(image["result"]["images"]) == 2
    assert fetch(client, image["result"]["images"][0]["url"]).status_code == 200
    assert fetch(client, tts["result"]["audio_url"]).status_code == 200 and tts["result"]["format"] == "wav"
    assert rerank["result"]["results"][0]["index"] == 0


def test_a_batch_item_is_never_priced_above_the_same_call_made_alone(client, funded):
    account, secret = funded
    alone_chat = post(client, "/ai/chat", CHAT["body"], secret).json()
    alone_embed = post(client, "/ai/embed", EMBED["body"], secret).json()
    answer = submit(client, secret, [CHAT, EMBED])
    chat_item, embed_item = BatchItem.objects.filter(batch__public_id=answer["batch_id"]).order_by("index")
    per_call_chat_hold = Hold.objects.get(reference=alone_chat["_metadata"]["request_id"]).amount_nano
    assert chat_item.hold_nano < per_call_chat_hold, "the worst case is held at the batch price"
    run(answer["batch_id"])
    chat_item.refresh_from_db()
    embed_item.refresh_from_db()
    assert 0 < chat_item.cost_nano < usd_to_nano(alone_chat["_metadata"]["cost_usd"])
    assert embed_item.cost_nano == usd_to_nano(alone_embed["_metadata"]["cost_usd"])


def test_a_failing_item_fails_alone_unbilled_and_the_batch_completes(client, funded):
    account, secret = funded
    failing = {"capability": "chat", "body": {"messages": "hi", "model": "sandbox-chat-fail-500"}}
    answer = submit(client, secret, [EMBED, failing, RERANK])
    assert run(answer["batch_id"]) == {"succeeded": 2, "failed": 1}
    done = status(client, secret, answer["batch_id"])
    assert (done["state"], done["completed_count"], done["failed_count"]) == ("completed", 2, 1)
    item = all_results(client, secret, answer["batch_id"])[1]
    assert item["state"] == "failed" and item["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert item["error"]["vendor"] == "sandbox" and item["cost_usd"] == "0.00"
    assert_billed_exactly_once(account)


def test_a_batch_whose_every_item_failed_is_failed(client, funded):
    _, secret = funded
    failing = {"capability": "chat", "body": {"messages": "hi", "model": "sandbox-chat-fail-400"}}
    answer = submit(client, secret, [failing, failing])
    run(answer["batch_id"])
    assert status(client, secret, answer["batch_id"])["state"] == "failed"


def test_items_carry_their_conversation_id(client, funded):
    _, secret = funded
    in_body = {"capability": "embed", "body": {"input": "x", "conversation_id": "conv-b"}}
    answer = submit(
        client, secret, [{**EMBED, "conversation_id": "conv-a"}, in_body, EMBED, {**EMBED, "conversation_id": None}]
    )
    run(answer["batch_id"])
    assert [i["conversation_id"] for i in all_results(client, secret, answer["batch_id"])] == [
        "conv-a",
        "conv-b",
        None,
        None,
    ]


def test_state_changes_are_published_to_the_owner(client, funded, monkeypatch, django_capture_on_commit_callbacks):
    account, secret = funded
    sent = []
    monkeypatch.setattr(
        rules.live, "publish", lambda account_id, event, payload: sent.append((account_id, event, payload))
    )
    answer = submit(client, secret, [EMBED, RERANK, EMBED])
    run(answer["batch_id"])
    assert {account_id for account_id, _, _ in sent} == {account.public_id}
    assert {event for _, event, _ in sent} == {"batch.updated"}
    states = [payload["state"] for _, _, payload in sent]
    assert states[0] == "queued" and "running" in states and states[-1] == "completed"
    last = sent[-1][2]
    assert last == {
        "batch_id": answer["batch_id"],
        "state": "completed",
        "progress": 1.0,
        "completed_count": 3,
        "failed_count": 0,
        "total_cost_usd": status(client, secret, answer["batch_id"])["total_cost_usd"],
    }


def test_live_updates_are_throttled_between_state_changes(client, funded, monkeypatch):
    _, secret = funded
    sent = []
    monkeypatch.setattr(rules.live, "publish", lambda *args: sent.append(args))
    answer = submit(client, secret, [RERANK] * 30)
    run(answer["batch_id"])
    # queued, running, completed, plus at most a few progress events in between (~0.3 s apart).
    assert 3 <= len(sent) <= 3 + 10


# --- Results and list ---------------------------------------------------------------------------


def test_results_are_paginated_by_index_and_the_cursor_stays_valid_while_the_batch_runs(client, funded):
    _, secret = funded
    answer = submit(client, secret, [EMBED] * 7)
    batch_id = answer["batch_id"]
    first = get(client, f"/ai/batch/results/{batch_id}?limit=3", secret).json()
    assert [i["index"] for i in first["items"]] == [0, 1, 2]
    assert {i["state"] for i in first["items"]} == {"queued"} and first["total_count"] == 7
    run(batch_id)
    second = get(client, f"/ai/batch/results/{batch_id}?limit=3&cursor={first['next_cursor']}", secret).json()
    assert [i["index"] for i in second["items"]] == [3, 4, 5]
    assert {i["state"] for i in second["items"]} == {"succeeded"}
    third = get(client, f"/ai/batch/results/{batch_id}?limit=3&cursor={second['next_cursor']}", secret).json()
    assert [i["index"] for i in third["items"]] == [6] and third["next_cursor"] is None
    assert len(all_results(client, secret, batch_id)) == 7


def test_results_refuse_a_bad_limit_or_cursor(client, funded, outsider):
    _, secret = funded
    batch_id = submit(client, secret, [EMBED] * 3)["batch_id"]
    other_id = submit(client, secret, [EMBED] * 3)["batch_id"]
    for query in ("limit=0", "limit=201", "limit=ten"):
        response = get(client, f"/ai/batch/results/{batch_id}?{query}", secret)
        assert response.status_code == 400 and response.json()["error"]["field"] == "limit"
    assert get(client, f"/ai/batch/results/{batch_id}?limit=200", secret).status_code == 200
    forged = get(client, f"/ai/batch/results/{batch_id}?cursor=eyJpIjoxfQ", secret)
    assert forged.status_code == 400 and forged.json()["error"]["field"] == "cursor"
    cursor = get(client, f"/ai/batch/results/{other_id}?limit=1", secret).json()["next_cursor"]
    assert get(client, f"/ai/batch/results/{batch_id}?cursor={cursor}", secret).status_code == 400


def test_the_list_is_newest_first_paginated_and_only_the_callers(client, funded, outsider):
    _, secret = funded
    _, other_secret = outsider
    ids = [submit(client, secret, [EMBED])["batch_id"] for _ in range(5)]
    submit(client, other_secret, [EMBED])
    seen = []
    cursor = None
    pages = 0
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = get(client, f"/ai/batch/list?{query}", secret).json()
        assert page["total_count"] == 5
        seen += [b["batch_id"] for b in page["batches"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == ids[::-1]
    first = get(client, "/ai/batch/list", secret).json()["batches"][0]
    assert {"batch_id", "state", "progress", "total_count", "completed_count", "failed_count", "created_at"} <= set(
        first
    )
    response = get(client, "/ai/batch/list?cursor=nonsense", secret)
    assert response.status_code == 400 and response.json()["error"]["field"] == "cursor"


# --- Cancel -------------------------------------------------------------------------------------


def test_cancelling_a_queued_batch_cancels_every_item_and_releases_every_hold(client, funded):
    account, secret = funded
    batch_id = submit(client, secret, [CHAT, EMBED, RERANK])["batch_id"]
    response = post(client, f"/ai/batch/cancel/{batch_id}", {}, secret)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["state"], answer["cancelled_count"], answer["total_cost_usd"]) == ("cancelled", 3, "0.00")
    assert ledger.get_balance(account).held_nano == 0 and ledger.get_balance(account).balance_nano == USD
    assert {i["state"] for i in all_results(client, secret, batch_id)} == {"cancelled"}
    assert run(batch_id) == {}
    again = post(client, f"/ai/batch/cancel/{batch_id}", {"batch_id": "...", "idempotency_key": "c-1"}, secret)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    assert again.json()["cancelled_count"] == 3
    assert_billed_exactly_once(account)


def test_cancelling_a_running_batch_keeps_finished_items_billed_and_drops_the_running_one(client, funded):
    account, secret = funded
    batch_id = submit(client, secret, [EMBED, RERANK, EMBED, EMBED])["batch_id"]
    first = rules.claim_next(batch_id, "worker-a")
    assert async_to_sync(rules.run_claimed)(first, "worker-a") == "succeeded"
    running = rules.claim_next(batch_id, "worker-b")
    assert status(client, secret, batch_id)["state"] == "running"

    answer = post(client, f"/ai/batch/cancel/{batch_id}", {}, secret).json()
    assert (answer["state"], answer["completed_count"], answer["cancelled_count"]) == ("cancelled", 1, 3)
    billed = usd_to_nano(answer["total_cost_usd"])
    assert billed > 0 and ledger.get_balance(account).balance_nano == USD - billed
    # The worker that was running item 1 finishes its call: its hold is gone, so nothing is kept.
    assert async_to_sync(rules.run_claimed)(running, "worker-b") == "lost"
    items = all_results(client, secret, batch_id)
    assert [i["state"] for i in items] == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert not UsageRecord.objects.filter(request_id=items[1]["request_id"]).exists()
    assert ledger.get_balance(account).held_nano == 0
    assert_billed_exactly_once(account)


@pytest.mark.django_db(transaction=True)
def test_a_cancel_during_the_call_stops_the_worker_through_its_lease(client, settings, monkeypatch):
    import asyncio
    import threading

    from django.db import connection

    from gateway.vendors.sandbox import Sandbox

    finished = []
    monkeypatch.setattr(rules, "finish", lambda claimed, outcome: finished.append(outcome))

    async def slow_upstream(*args, **kwargs):
        # A SIMULATED slow vendor: the call is still running when the cancel lands, however fast
        # this machine synthesises speech.
        await asyncio.sleep(10)
        raise AssertionError("the worker should have abandoned the call")

    monkeypatch.setattr(Sandbox, "tts", slow_upstream)

    account = make_account(credit_nano=USD)
    secret = make_key(account)
    settings.JOB_LEASE_SECONDS = 0.3  # renewed every 0.1 s
    slow = {"capability": "tts", "body": {"input": "The quick brown fox jumps over the lazy dog. " * 20}}
    batch_id = submit(client, secret, [slow])["batch_id"]
    claimed = rules.claim_next(batch_id, "worker-a")

    def cancel_soon() -> None:
        rules.cancel(Batch.objects.get(public_id=batch_id))
        connection.close()

    timer = threading.Timer(0.3, cancel_soon)
    timer.start()
    assert async_to_sync(rules.run_claimed)(claimed, "worker-a") == "lost"
    timer.join()
    assert finished == [], "the call was abandoned when the lease went, before any result was kept"
    item = BatchItem.objects.get()
    assert (item.state, item.files, item.result) == ("cancelled", [], None)
    assert not UsageRecord.objects.exists()
    assert ledger.get_balance(account).balance_nano == USD
    assert_billed_exactly_once(account)


def test_cancelling_a_completed_batch_changes_nothing(client, funded):
    account, secret = funded
    batch_id = submit(client, secret, [EMBED, RERANK])["batch_id"]
    run(batch_id)
    before = status(client, secret, batch_id)
    answer = post(client, f"/ai/batch/cancel/{batch_id}", {}, secret).json()
    assert answer["state"] == "completed" and answer["completed_count"] == 2
    assert answer["total_cost_usd"] == before["total_cost_usd"]
    assert UsageRecord.objects.filter(account=account).count() == 2
    assert_billed_exactly_once(account)


# --- Timeout and recovery -----------------------------------------------------------------------


def test_a_batch_past_its_timeout_fails_what_is_unfinished_and_releases_their_holds(client, funded):
    account, secret = funded
    batch_id = submit(client, secret, [EMBED, EMBED, EMBED], batch_timeout="90m")["batch_id"]
    done = rules.claim_next(batch_id, "worker-a")
    async_to_sync(rules.run_claimed)(done, "worker-a")
    rules.claim_next(batch_id, "worker-b")  # running when the deadline passes
    assert rules.fail_timed_out() == 0, "not yet"
    with time_machine.travel(timezone.now() + timedelta(minutes=91)):
        assert rules.claim_next(batch_id, "worker-c") is None, "no new work after the deadline"
        assert rules.fail_timed_out() == 1
        assert rules.fail_timed_out() == 0
        answer = status(client, secret, batch_id)
    assert answer["state"] == "failed" and answer["error"]["code"] == "BATCH_TIMEOUT"
    assert (answer["completed_count"], answer["failed_count"]) == (1, 2)
    items = all_results(client, secret, batch_id)
    assert [i["state"] for i in items] == ["succeeded", "failed", "failed"]
    assert {i["error"]["code"] for i in items[1:]} == {"BATCH_TIMEOUT"}
    assert ledger.get_balance(account).held_nano == 0
    assert_billed_exactly_once(account)


def test_housekeeping_requeues_the_item_of_a_dead_worker_and_enqueues_a_task(client, funded, settings):
    from django_tasks_db.models import DBTaskResult

    account, secret = funded
    settings.JOB_LEASE_SECONDS = 30
    batch_id = submit(client, secret, [EMBED, RERANK])["batch_id"]
    dead = rules.claim_next(batch_id, "dead-worker")  # its process was killed: the lease is never renewed
    assert rules.recover_stalled() == 0, "its worker looks alive: it takes the queued item next"
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        assert rules.recover_stalled() >= 2  # requeued, and a task enqueued for it
        item = BatchItem.objects.get(pk=dead.item_pk)
        assert (item.state, item.lease_owner) == ("queued", "")
        assert DBTaskResult.objects.filter(args_kwargs__args__0=batch_id).exists()
        assert rules.recover_stalled() == 0, "a task is waiting: nothing more to do"
        assert run(batch_id) == {"succeeded": 2}
    item.refresh_from_db()
    assert (item.state, item.attempts) == ("succeeded", 2)
    assert UsageRecord.objects.filter(account=account).count() == 2
    assert_billed_exactly_once(account)


def test_an_item_whose_worker_keeps_dying_fails_after_three_attempts(client, funded, settings):
    account, secret = funded
    settings.JOB_LEASE_SECONDS = 10
    batch_id = submit(client, secret, [EMBED])["batch_id"]
    now = timezone.now()
    for attempt in range(1, 4):
        with time_machine.travel(now + timedelta(seconds=11 * attempt)):
            claimed = rules.claim_next(batch_id, f"doomed-{attempt}")
            assert claimed is not None
    with time_machine.travel(now + timedelta(seconds=50)):
        assert rules.claim_next(batch_id, "another") is None
        rules.recover_stalled()
    item = BatchItem.objects.get()
    assert (item.state, item.attempts, item.error["code"]) == ("failed", 3, "WORKER_LOST")
    assert status(client, secret, batch_id)["state"] == "failed"
    assert_billed_exactly_once(account)


def test_the_chores_are_registered():
    from jobs import housekeeping

    names = set(housekeeping._chores)
    assert {
        "requeue batch items of dead workers",
        "fail batches past their timeout",
        "purge batch results past retention",
    } <= names


# --- Export -------------------------------------------------------------------------------------


def test_export_writes_jsonl_and_csv_of_the_results_and_filters_by_conversation(client, funded):
    _, secret = funded
    items = [{**EMBED, "conversation_id": "a"}, {**CHAT, "conversation_id": "b"}, {**RERANK, "conversation_id": "a"}]
    batch_id = submit(client, secret, items)["batch_id"]
    run(batch_id)

    response = post(client, f"/ai/batch/export/{batch_id}", {"format": "jsonl"}, secret)
    assert response.status_code == 200, response.content
    made = response.json()
    assert made["export_id"].startswith("bexp_") and made["state"] == "completed" and made["format"] == "jsonl"
    assert made["expires_at"] and made["created_at"]
    lines = [json.loads(line) for line in b"".join(fetch(client, made["download_url"]).streaming_content).splitlines()]
    assert [row["index"] for row in lines] == [0, 1, 2]
    assert lines[1]["result"]["content"] and lines[0]["result"]["embeddings"]
    assert lines == all_results(client, secret, batch_id)

    only_a = post(client, f"/ai/batch/export/{batch_id}", {"format": "csv", "conversation_id": "a"}, secret).json()
    text = b"".join(fetch(client, only_a["download_url"]).streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["index"], r["conversation_id"], r["capability"]) for r in rows] == [
        ("0", "a", "embed"),
        ("2", "a", "rerank"),
    ]
    assert json.loads(rows[1]["result"])["results"][0]["index"] == 0
    assert {r["state"] for r in rows} == {"succeeded"} and all(usd_to_nano(r["cost_usd"]) > 0 for r in rows)
    assert get(client, f"/ai/batch/results/{batch_id}", secret).json()["download_url"]


def test_export_refuses_an_unknown_format_and_replays_with_its_key(client, funded):
    _, secret = funded
    batch_id = submit(client, secret, [EMBED])["batch_id"]
    bad = post(client, f"/ai/batch/export/{batch_id}", {"format": "xlsx"}, secret)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "format"
    first = post(client, f"/ai/batch/export/{batch_id}", {"idempotency_key": "e-1"}, secret).json()
    again = post(client, f"/ai/batch/export/{batch_id}", {"idempotency_key": "e-1"}, secret).json()
    assert again["export_id"] == first["export_id"] and first["format"] == "jsonl"
    assert BatchExport.objects.count() == 1
    assert post(client, f"/ai/batch/export/{batch_id}", {}, secret).json()["export_id"] != first["export_id"]


# --- Retention ----------------------------------------------------------------------------------


def test_set_retention_needs_retention_days(client, funded):
    _, secret = funded
    batch_id = submit(client, secret, [EMBED])["batch_id"]
    seed_example = post(client, f"/ai/batch/set_retention/{batch_id}", {"batch_id": "..."}, secret)
    assert seed_example.status_code == 400
    assert seed_example.json()["error"].items() >= {"code": "MISSING_FIELD", "field": "retention_days"}.items()
    for value in (0, 366, "7", 1.5, True):
        response = post(client, f"/ai/batch/set_retention/{batch_id}", {"retention_days": value}, secret)
        assert response.status_code == 400 and response.json()["error"]["field"] == "retention_days"
    answer = post(client, f"/ai/batch/set_retention/{batch_id}", {"retention_days": 7}, secret).json()
    assert answer["retention_days"] == 7 and answer["expires_at"] is None, "counted from when the batch finishes"


def test_results_and_exports_are_purged_from_disk_and_database_after_retention(client, funded):
    account, secret = funded
    batch_id = submit(client, secret, [IMAGE, TTS, EMBED])["batch_id"]
    run(batch_id)
    export_name = BatchExport.objects.get(
        public_id=post(client, f"/ai/batch/export/{batch_id}", {}, secret).json()["export_id"]
    ).file_name
    names = [name for files in BatchItem.objects.values_list("files", flat=True) for name in files] + [export_name]
    assert len(names) == 4 and all(default_storage.exists(name) for name in names)
    answer = post(client, f"/ai/batch/set_retention/{batch_id}", {"retention_days": 1}, secret).json()
    assert answer["retention_days"] == 1 and answer["expires_at"]

    assert rules.purge_expired() == 0
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        assert rules.purge_expired() == 1
        assert rules.purge_expired() == 0
    assert not any(default_storage.exists(name) for name in names)
    assert not BatchItem.objects.exists() and not BatchExport.objects.exists()
    answer = status(client, secret, batch_id)
    assert answer["results_purged"] is True and answer["completed_count"] == 3
    gone = get(client, f"/ai/batch/results/{batch_id}", secret)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "RESULTS_PURGED"
    assert post(client, f"/ai/batch/export/{batch_id}", {}, secret).status_code == 410
    assert UsageRecord.objects.filter(account=account).count() == 3, "the bill stays"


def test_a_running_batch_is_not_purged(client, funded):
    _, secret = funded
    batch_id = submit(client, secret, [EMBED, EMBED])["batch_id"]
    post(client, f"/ai/batch/set_retention/{batch_id}", {"retention_days": 1}, secret)
    rules.claim_next(batch_id, "worker-a")
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        assert rules.purge_expired() == 0
    assert BatchItem.objects.count() == 2


# --- Isolation and methods ----------------------------------------------------------------------


def test_another_account_gets_404_on_every_batch_route(client, funded, outsider):
    account, secret = funded
    _, other_secret = outsider
    batch_id = submit(client, secret, [EMBED, RERANK])["batch_id"]
    attempts = [
        get(client, f"/ai/batch/status/{batch_id}", other_secret),
        get(client, f"/ai/batch/results/{batch_id}", other_secret),
        post(client, f"/ai/batch/cancel/{batch_id}", {}, other_secret),
        post(client, f"/ai/batch/export/{batch_id}", {}, other_secret),
        post(client, f"/ai/batch/set_retention/{batch_id}", {"retention_days": 1}, other_secret),
    ]
    for response in attempts:
        assert response.status_code == 404, response.content
        assert response.json()["error"].items() >= {"code": "NOT_FOUND", "field": "batch_id"}.items()
    assert get(client, "/ai/batch/list", other_secret).json()["batches"] == []
    assert get(client, "/ai/batch/status/batch_nope", secret).status_code == 404
    answer = status(client, secret, batch_id)
    assert (answer["state"], answer["retention_days"]) == ("queued", 30)
    assert not BatchExport.objects.exists()


def test_the_routes_need_a_key_and_their_methods(client, funded):
    _, secret = funded
    assert client.get("/v1/ai/batch/list").status_code == 401
    assert get(client, "/ai/batch/submit", secret).status_code == 405
    assert post(client, "/ai/batch/status/batch_x", {}, secret).status_code == 405
    assert post(client, "/ai/batch/list", {}, secret).status_code == 405
    assert get(client, "/ai/batch/cancel/batch_x", secret).status_code == 405
