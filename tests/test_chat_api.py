"""ai.chat and /v1/chat/completions through the sandbox vendor (offline, labelled "sandbox")."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.test import AsyncClient, Client

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from gateway.models import CatalogModel
from gateway.sandbox import tokens
from tests.factories import bearer, make_account, make_key
from tests.fakes.openai_upstream import Script, simulated_upstream

pytestmark = pytest.mark.django_db
USD = 1_000_000_000


def post(client, path, body, secret, **headers):
    return client.post(path, json.dumps(body), content_type="application/json", **bearer(secret), **headers)


def nano(usd: str) -> int:
    from infrai.lib.money import usd_to_nano

    return usd_to_nano(usd)


def test_a_chat_call_answers_with_content_usage_and_metadata(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    response = post(client, "/v1/ai/chat", {"messages": "What is the capital of France?"}, secret)
    assert response.status_code == 200
    body = response.json()
    assert "France" in body["content"] and body["finish_reason"] == "stop"
    meta = body["_metadata"]
    assert meta["vendor"] == "sandbox" and meta["cache_hit"] is False
    assert meta["request_id"] == response["X-Request-Id"]
    prompt_tokens = tokens.count_messages([{"role": "user", "content": "What is the capital of France?"}])
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    entry = CatalogModel.objects.get(model_id="sandbox-chat", capability="chat")
    assert entry.input_per_mtok == 0 or nano(meta["cost_usd"]) > 0
    record = UsageRecord.objects.get(request_id=meta["request_id"])
    assert record.cost_nano == nano(meta["cost_usd"])
    assert record.vendor == "sandbox" and record.input_tokens == prompt_tokens
    assert ledger.get_balance(account).balance_nano == USD - record.cost_nano
    assert ledger.get_balance(account).held_nano == 0


def test_the_cost_is_the_catalog_price_of_the_reported_usage(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    body = post(client, "/v1/ai/chat", {"messages": "hello there", "model": "sandbox-chat-pro"}, secret).json()
    entry = CatalogModel.objects.get(model_id="sandbox-chat-pro")
    usage = body["usage"]
    expected_usd = (
        usage["prompt_tokens"] * entry.input_per_mtok + usage["completion_tokens"] * entry.output_per_mtok
    ) / 1_000_000
    assert nano(body["_metadata"]["cost_usd"]) == nano(str(expected_usd.normalize()))


def test_a_call_without_credit_gets_402_with_a_way_to_top_up(client):
    account = make_account(credit_nano=0)
    secret = make_key(account)
    response = post(client, "/v1/ai/chat", {"messages": "hi"}, secret)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "INSUFFICIENT_CREDIT"
    assert error["balance_usd"] == "0.00"
    assert nano(error["required_usd"]) > 0
    assert error["topup_url"].startswith("http://testserver/billing/?amount_usd=")
    assert not Hold.objects.exists() and not UsageRecord.objects.exists()


def test_bad_input_names_the_field(client):
    secret = make_key(make_account(credit_nano=USD))
    cases = [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": "hi", "temperature": 3}, "temperature"),
        ({"messages": "hi", "temperature": "warm"}, "temperature"),
        ({"messages": "hi", "max_tokens": 0}, "max_tokens"),
        ({"messages": "hi", "max_tokens": 10**9}, "max_tokens"),
        ({"messages": "hi", "prefer": "fastest"}, "prefer"),
        ({"messages": "hi", "task": "poetry"}, "task"),
        ({"messages": "hi", "cache_strategy": "always"}, "cache_strategy"),
        ({"messages": "hi", "stream": "yes"}, "stream"),
        ({"messages": "hi", "model": "no-such-model"}, "model"),
        ({"messages": "hi", "vendor": "acme"}, "vendor"),
        ({"messages": "hi", "response_format": {"type": "yaml"}}, "response_format"),
        ({"messages": "hi", "max_cost_multiplier": 0.5}, "max_cost_multiplier"),
    ]
    for body, field in cases:
        response = post(client, "/v1/ai/chat", body, secret)
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"]["field"] == field, body


def test_a_real_vendor_asked_for_is_never_served_by_the_sandbox(client):
    secret = make_key(make_account(credit_nano=USD))
    response = post(client, "/v1/ai/chat", {"messages": "hi", "model": "gpt-4o"}, secret)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VENDOR_NOT_CONFIGURED"
    assert not UsageRecord.objects.exists()


def test_an_upstream_failure_is_a_5xx_with_the_reason_and_the_hold_released(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    response = post(client, "/v1/ai/chat", {"messages": "hi", "model": "sandbox-chat-fail-500"}, secret)
    assert response.status_code == 502
    assert "injected" in response.json()["error"]["message"]
    limited = post(
        client, "/v1/ai/chat", {"messages": "hi", "model": "sandbox-chat"}, secret, HTTP_X_SANDBOX_FAIL="429"
    )
    assert limited.status_code == 503 and limited.json()["error"]["code"] == "UPSTREAM_RATE_LIMITED"
    balance = ledger.get_balance(account)
    assert (balance.balance_nano, balance.held_nano) == (USD, 0)
    assert set(Hold.objects.values_list("state", flat=True)) == {HoldState.RELEASED}


def test_a_retryable_failure_fails_over_to_the_next_vendor_within_the_cost_cap(client, settings):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    with simulated_upstream(Script(status=429)) as (failing_url, failing), simulated_upstream() as (ok_url, ok):
        settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-sim", failing_url
        settings.OPENAI_COMPATIBLE_API_KEY, settings.OPENAI_COMPATIBLE_BASE_URL = "sim", ok_url
        # gpt-4o-mini (openai) ranks first for cheapest; deepseek-chat costs under 5x its worst case, over 1x.
        response = post(
            client,
            "/v1/ai/chat",
            {"messages": "hi", "prefer": "cheapest", "max_tokens": 100, "max_cost_multiplier": 5},
            secret,
        )
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["content"] == "Hello from the simulated upstream."
        assert body["_metadata"]["vendor"] == "openai_compatible"
        assert [r["body"]["model"] for r in failing.requests] == ["gpt-4o-mini"]
        assert [r["body"]["model"] for r in ok.requests] == ["deepseek-chat"]
        record = UsageRecord.objects.get()
        assert (record.vendor, record.model) == ("openai_compatible", "deepseek-chat")

        # With a cap of 1x, deepseek-chat costs too much to stand in: the 429 is the answer.
        capped = post(
            client,
            "/v1/ai/chat",
            {"messages": "hi", "prefer": "cheapest", "max_tokens": 100, "max_cost_multiplier": 1},
            secret,
        )
        assert capped.status_code == 503 and capped.json()["error"]["code"] == "UPSTREAM_RATE_LIMITED"
        assert len(ok.requests) == 1
    assert ledger.get_balance(account).held_nano == 0


def test_a_replay_with_the_same_idempotency_key_is_not_charged_again(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    first = post(client, "/v1/ai/chat", {"messages": "hi", "idempotency_key": "abc"}, secret).json()
    balance_after_first = ledger.get_balance(account).balance_nano
    again = post(client, "/v1/ai/chat", {"messages": "hi", "idempotency_key": "abc"}, secret).json()
    assert again["content"] == first["content"]
    assert again["_metadata"]["replayed"] is True and again["_metadata"]["cost_usd"] == "0.00"
    assert again["_metadata"]["original_request_id"] == first["_metadata"]["request_id"]
    assert ledger.get_balance(account).balance_nano == balance_after_first
    assert UsageRecord.objects.count() == 1
    other = post(client, "/v1/ai/chat", {"messages": "something else", "idempotency_key": "abc"}, secret)
    assert other.status_code == 422 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_a_client_request_id_derives_the_idempotency_key(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    post(client, "/v1/ai/chat", {"messages": "hi"}, secret, HTTP_X_CLIENT_REQUEST_ID="sdk-1")
    retry = post(client, "/v1/ai/chat", {"messages": "hi"}, secret, HTTP_X_CLIENT_REQUEST_ID="sdk-1").json()
    assert retry["_metadata"]["replayed"] is True
    post(client, "/v1/ai/chat", {"messages": "hi"}, secret)
    assert UsageRecord.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_replays_charge_once():
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    statuses: list[int] = []
    bodies: list[dict] = []
    barrier = threading.Barrier(20)

    def call() -> None:
        barrier.wait()
        try:
            response = post(Client(), "/v1/ai/chat", {"messages": "same", "idempotency_key": "race"}, secret)
            statuses.append(response.status_code)
            bodies.append(response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 20 and set(statuses) <= {200, 409}
    assert statuses.count(200) >= 1
    for body in bodies:
        if "error" in body:
            assert body["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert UsageRecord.objects.count() == 1
    record = UsageRecord.objects.get()
    assert ledger.get_balance(account).balance_nano == USD - record.cost_nano
    assert ledger.check_consistency() == []


def test_the_infrai_cache_answers_an_identical_call_free_as_a_cache_hit(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    body = {"messages": "cache me", "cache_strategy": "infrai"}
    first = post(client, "/v1/ai/chat", body, secret).json()
    second = post(client, "/v1/ai/chat", body, secret).json()
    assert second["content"] == first["content"]
    assert second["_metadata"]["cache_hit"] is True and second["_metadata"]["cost_usd"] == "0.00"
    assert [r.cache_hit for r in UsageRecord.objects.order_by("created_at")] == [False, True]
    none = post(client, "/v1/ai/chat", {**body, "cache_strategy": "none"}, secret).json()
    assert none["_metadata"]["cache_hit"] is False
    other_account_secret = make_key(make_account("bob@example.com", credit_nano=USD))
    assert post(client, "/v1/ai/chat", body, other_account_secret).json()["_metadata"]["cache_hit"] is False


def test_the_openai_shape_answers_a_chat_completion(client):
    secret = make_key(make_account(credit_nano=USD))
    response = post(
        client,
        "/v1/chat/completions",
        {"model": "sandbox-chat", "messages": [{"role": "user", "content": "hi"}]},
        secret,
    )
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant" and body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["_metadata"]["vendor"] == "sandbox"


def test_models_lists_the_catalog(client):
    secret = make_key(make_account())
    data = client.get("/v1/models", **bearer(secret)).json()["data"]
    ids = {m["id"] for m in data}
    assert {"sandbox-chat", "gpt-4o-mini"} <= ids


# --- Streaming --------------------------------------------------------------------------------


async def _stream(path: str, body: dict, secret: str, **headers) -> tuple[int, list]:
    client = AsyncClient()
    response = await client.post(
        path,
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", **headers},
    )
    if not response.streaming:
        return response.status_code, [json.loads(response.content)]
    events = []
    async for chunk in response.streaming_content:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                payload = line[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return response.status_code, events


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_chat_sends_deltas_then_a_final_event_with_metadata():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    status, events = await _stream("/v1/ai/chat", {"messages": "Tell me about streams", "stream": True}, secret)
    assert status == 200
    assert events[-1] == "[DONE]"
    deltas = [e["delta"] for e in events[:-2]]
    final = events[-2]
    assert len(deltas) > 3 and all(isinstance(d, str) for d in deltas)
    assert final["finish_reason"] == "stop" and final["_metadata"]["vendor"] == "sandbox"
    assert final["usage"]["completion_tokens"] == tokens.count_text("".join(deltas))
    record = await UsageRecord.objects.aget(request_id=final["_metadata"]["request_id"])
    assert record.cost_nano == nano(final["_metadata"]["cost_usd"])
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and balance.balance_nano == USD - record.cost_nano


@pytest.mark.django_db(transaction=True)
async def test_a_cut_stream_is_charged_for_what_was_delivered():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    status, events = await _stream(
        "/v1/ai/chat",
        {"messages": "Tell me a long story", "model": "sandbox-chat-cut-stream-4", "stream": True},
        secret,
    )
    deltas = [e["delta"] for e in events if isinstance(e, dict) and "delta" in e]
    assert len(deltas) == 4
    assert any(isinstance(e, dict) and "error" in e for e in events)
    record = await UsageRecord.objects.aget()
    assert record.status == "cut"
    assert record.output_tokens == tokens.count_text("".join(deltas))
    balance = await sync_to_async(ledger.get_balance)(account)
    assert balance.held_nano == 0 and balance.balance_nano == USD - record.cost_nano


@pytest.mark.django_db(transaction=True)
async def test_the_openai_stream_shape_ends_with_done_and_usage():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    body = {
        "model": "sandbox-chat",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, events = await _stream("/v1/chat/completions", body, secret)
    assert status == 200 and events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["usage"]["completion_tokens"] > 0 and events[-2]["choices"] == []


@pytest.mark.django_db(transaction=True)
async def test_a_stream_without_credit_is_a_plain_402():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)()
    secret = await sync_to_async(make_key)(account)
    status, events = await _stream("/v1/ai/chat", {"messages": "hi", "stream": True}, secret)
    assert status == 402 and events[0]["error"]["code"] == "INSUFFICIENT_CREDIT"


@pytest.mark.django_db(transaction=True)
async def test_a_retried_stream_with_the_same_idempotency_key_replays_without_charging():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    body = {"messages": "Stream me once", "stream": True, "idempotency_key": "stream-1"}
    _, first = await _stream("/v1/ai/chat", body, secret)
    balance_after_first = (await sync_to_async(ledger.get_balance)(account)).balance_nano
    _, again = await _stream("/v1/ai/chat", body, secret)
    text_first = "".join(e["delta"] for e in first if isinstance(e, dict) and "delta" in e)
    text_again = "".join(e["delta"] for e in again if isinstance(e, dict) and "delta" in e)
    assert text_again == text_first and len(text_first) > 10
    assert again[-2]["_metadata"]["replayed"] is True and again[-2]["_metadata"]["cost_usd"] == "0.00"
    assert (await sync_to_async(ledger.get_balance)(account)).balance_nano == balance_after_first
    assert await UsageRecord.objects.acount() == 1


@pytest.mark.django_db(transaction=True)
async def test_a_stream_that_broke_can_be_retried_with_its_key():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)(credit_nano=USD)
    secret = await sync_to_async(make_key)(account)
    cut = {"messages": "hi", "model": "sandbox-chat-cut-stream-2", "stream": True, "idempotency_key": "k"}
    _, events = await _stream("/v1/ai/chat", cut, secret)
    assert any(isinstance(e, dict) and "error" in e for e in events)
    _, retried = await _stream("/v1/ai/chat", cut, secret)
    assert not any(isinstance(e, dict) and e.get("_metadata", {}).get("replayed") for e in retried)
    assert await UsageRecord.objects.acount() == 2  # the cut call and the retry, each charged for what it delivered


def test_with_the_cache_down_an_infrai_cached_call_still_answers(client, monkeypatch):
    from django.core.cache import cache

    async def down(*args, **kwargs):
        raise ConnectionError("redis down")

    monkeypatch.setattr(cache, "aget", down)
    monkeypatch.setattr(cache, "aset", down)
    secret = make_key(make_account(credit_nano=USD))
    response = post(client, "/v1/ai/chat", {"messages": "hi", "cache_strategy": "infrai"}, secret)
    assert response.status_code == 200 and response.json()["_metadata"]["cache_hit"] is False
