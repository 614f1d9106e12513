"""Idempotency keys across server faults: a call that died unanswered does not block its key for
the whole window, is never charged twice, and database outages answer a JSON 503.

The PostgreSQL restart versions of these are in tests/test_fault_injection.py; here the faults
are made directly (a claim left behind as a dead call leaves it, a write that fails once).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from gateway import idempotency
from gateway.models import IdempotencyRecord
from infrai import db_async
from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db(transaction=True)
USD = 1_000_000_000
BODY = {"messages": "hi", "idempotency_key": "order-42"}


def chat(client, secret: str):
    return client.post("/v1/ai/chat", json.dumps(BODY), content_type="application/json", **bearer(secret))


def dead_claim(account, *, age_seconds: int, request_id: str = "01a00000-0000-7000-8000-000000000001") -> None:
    """The claim a call leaves when its process or database died before it answered or abandoned."""
    created = timezone.now() - timedelta(seconds=age_seconds)
    IdempotencyRecord.objects.create(
        account=account,
        scope="ai.chat",
        key=BODY["idempotency_key"],
        request_hash=idempotency.canonical_hash(BODY),
        request_id=request_id,
        created_at=created,
        expires_at=created + timedelta(days=1),
    )


def test_a_claim_still_young_enough_to_be_running_answers_in_progress(client):
    account = make_account(credit_nano=USD)
    dead_claim(account, age_seconds=1)
    response = chat(client, make_key(account))
    assert response.status_code == 409 and response.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"


def test_a_dead_call_that_charged_nothing_gives_its_key_to_the_retry_which_is_charged_once(client, settings):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    dead_claim(account, age_seconds=settings.HOLD_TTL_SECONDS + 60)

    first = chat(client, secret)
    again = chat(client, secret)
    assert first.status_code == 200, first.content
    assert again.status_code == 200 and again.json()["_metadata"]["replayed"] is True
    assert UsageRecord.objects.filter(account=account).count() == 1
    assert ledger.get_balance(account).balance_nano == USD - UsageRecord.objects.get().cost_nano


def test_a_dead_call_that_was_charged_is_not_run_again_and_says_so(client, settings):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    first = chat(client, secret)
    assert first.status_code == 200
    charged = first.json()["_metadata"]["request_id"]
    # The answer was lost after the charge (the database went away before it was stored).
    record = IdempotencyRecord.objects.get()
    record.response, record.status_code = None, None
    record.created_at = timezone.now() - timedelta(seconds=settings.HOLD_TTL_SECONDS + 60)
    record.save()

    retry = chat(client, secret)
    assert retry.status_code == 409
    error = retry.json()["error"]
    assert error["code"] == "IDEMPOTENCY_ANSWER_LOST" and error["original_request_id"] == charged
    assert error["field"] == "idempotency_key"
    assert UsageRecord.objects.count() == 1  # not charged again


def test_storing_the_answer_survives_a_brief_database_failure(client, monkeypatch):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    monkeypatch.setattr(idempotency.time, "sleep", lambda seconds: None)
    real_update = idempotency.IdempotencyRecord.objects.filter
    failures = {"left": 2}

    def flaky_filter(*args, **kwargs):
        query = real_update(*args, **kwargs)
        if "pk" in kwargs and failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return query

    monkeypatch.setattr(idempotency.IdempotencyRecord.objects, "filter", flaky_filter)
    first = chat(client, secret)
    monkeypatch.undo()
    assert first.status_code == 200 and failures["left"] == 0
    replay = chat(client, secret)
    assert replay.status_code == 200 and replay.json()["_metadata"]["replayed"] is True
    assert replay.json()["content"] == first.json()["content"]
    assert UsageRecord.objects.count() == 1


def test_a_database_outage_answers_a_json_503_with_retry_after(client, monkeypatch):
    account = make_account(credit_nano=USD)
    secret = make_key(account)

    def unavailable(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")

    monkeypatch.setattr(ledger, "reserve", unavailable)  # the ledger's sync steps (SQLite)
    monkeypatch.setattr(db_async, "connection", unavailable)  # the event loop's pool (PostgreSQL)
    response = chat(client, secret)
    assert response.status_code == 503
    assert response["Retry-After"] == "2" and response["X-Request-Id"]
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert not Hold.objects.filter(state=HoldState.OPEN).exists()
