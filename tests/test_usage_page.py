from __future__ import annotations

import json

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from console.models import ProjectKey
from tests.factories import bearer, make_account, make_key, signed_in_client

pytestmark = pytest.mark.django_db
USD = 1_000_000_000


def _chat(client, secret, **body):
    return client.post(
        "/v1/ai/chat", json.dumps({"messages": "hello", **body}), content_type="application/json", **bearer(secret)
    )


def test_every_billed_call_appears_on_the_usage_page_with_its_cost(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account, label="backend")
    meta = _chat(client, secret).json()["_metadata"]
    page = signed_in_client(account).get("/usage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert meta["request_id"][:10] in html
    assert "sandbox-chat" in html and "pill-sandbox" in html
    record = UsageRecord.objects.get()
    assert record.key == ProjectKey.objects.get() and record.project == account.projects.get()
    assert "<svg" in html and "sandbox-chat" in html


def test_the_usage_page_filters_by_model_key_capability_and_date(client):
    account = make_account(credit_nano=USD)
    first_key = make_key(account, label="one")
    second_key = make_key(account, label="two")
    _chat(client, first_key, model="sandbox-chat")
    _chat(client, second_key, model="sandbox-chat-mini")
    console = signed_in_client(account)
    by_model = console.get("/usage/", {"model": "sandbox-chat-mini"})
    assert by_model.context["page"].paginator.count == 1
    key_two = ProjectKey.objects.get(label="two")
    by_key = console.get("/usage/", {"key": key_two.public_id})
    assert [r.model for r in by_key.context["page"]] == ["sandbox-chat-mini"]
    assert console.get("/usage/", {"capability": "embed"}).context["page"].paginator.count == 0
    tomorrow = (timezone.now() + timezone.timedelta(days=1)).date().isoformat()
    assert console.get("/usage/", {"since": tomorrow}).context["page"].paginator.count == 0
    bad = console.get("/usage/", {"since": "last tuesday"})
    assert bad.status_code == 400 and b"since must be a date" in bad.content


def test_an_outsider_never_sees_anothers_usage(client):
    alice = make_account("alice@example.com", credit_nano=USD)
    _chat(client, make_key(alice))
    bob = signed_in_client(make_account("bob@example.com"))
    page = bob.get("/usage/")
    assert page.context["page"].paginator.count == 0
    assert UsageRecord.objects.get().request_id.encode()[:10] not in page.content
