"""What the hot path keeps in memory (project keys, the catalog, "no BYOK credential for this
vendor") and that every change that must be seen at once still is."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console import keys
from console.models import ProjectKey
from gateway import byok, routing
from gateway.api import ApiError, authenticate
from gateway.catalog import RoutingData
from gateway.models import CatalogModel
from tests.factories import bearer, make_account, make_key
from tests.live import live_servers

pytestmark = pytest.mark.django_db
USD = 1_000_000_000
CHAT = {"messages": "Hello!", "model": "sandbox-chat", "max_tokens": 20}


def _chat(client: Client, secret: str, body: dict | None = None):
    return client.post("/v1/ai/chat", json.dumps(body or CHAT), content_type="application/json", **bearer(secret))


def test_a_key_is_read_from_the_database_once_then_from_the_cache():
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    request = RequestFactory().post("/v1/ai/chat", HTTP_AUTHORIZATION=f"Bearer {secret}")
    with CaptureQueriesContext(connection) as first:
        authenticate(request)
    with CaptureQueriesContext(connection) as second:
        caller = authenticate(request)
    assert any("console_projectkey" in q["sql"] for q in first.captured_queries)
    assert second.captured_queries == [], "no SELECT, and last_used_at is not written again within the minute"
    assert caller.account.pk == account.pk and caller.project.account_id == account.pk
    assert caller.key is not None and caller.key.key_hash == keys.hash_key(secret)


def test_a_key_revoked_through_the_api_is_refused_at_once(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account, label="spent")
    other = make_key(account, label="admin")
    assert _chat(client, secret).status_code == 200
    key_id = ProjectKey.objects.get(label="spent").public_id
    assert client.delete(f"/v1/account/keys/{key_id}", **bearer(other)).status_code == 200
    refused = _chat(client, secret)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "INVALID_API_KEY"
    assert _chat(client, other).status_code == 200


def test_a_key_revoked_by_saving_the_row_is_refused_at_once(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    assert _chat(client, secret).status_code == 200
    key = ProjectKey.objects.get()
    key.label = "renamed"
    key.save()
    assert _chat(client, secret).status_code == 200, "an edit that does not revoke keeps the key working"
    key.revoked_at = timezone.now()
    key.save()
    assert _chat(client, secret).status_code == 401


def test_a_deleted_key_is_refused_at_once(client):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    assert _chat(client, secret).status_code == 200
    ProjectKey.objects.get().delete()
    assert _chat(client, secret).status_code == 401


def test_routing_reads_the_catalog_and_byok_from_the_database_once():
    account = make_account()
    routing.candidates(account, "chat", model="sandbox-chat")
    with CaptureQueriesContext(connection) as again:
        found = routing.candidates(account, "chat", model="sandbox-chat")
    assert again.captured_queries == []
    assert found[0].entry.model_id == "sandbox-chat"


def test_catalog_edits_reach_routing_at_once():
    account = make_account()
    entry = CatalogModel.objects.get(model_id="sandbox-chat", capability="chat")
    assert routing.candidates(account, "chat", model="sandbox-chat")[0].entry.output_per_mtok == entry.output_per_mtok
    entry.output_per_mtok = Decimal("7.5")
    entry.save()
    assert routing.candidates(account, "chat", model="sandbox-chat")[0].entry.output_per_mtok == Decimal("7.5")
    entry.delete()
    with pytest.raises(ApiError) as refused:
        routing.candidates(account, "chat", model="sandbox-chat")
    assert refused.value.code == "UNKNOWN_MODEL"


def test_a_change_from_another_process_is_seen_once_the_shared_version_moves():
    account = make_account()
    routing.candidates(account, "chat", model="sandbox-chat")
    # A queryset update sends no signal: for this process it is another process's change.
    CatalogModel.objects.filter(model_id="sandbox-chat", capability="chat").update(enabled=False)
    assert routing.candidates(account, "chat", model="sandbox-chat"), "this process still uses its copy"
    cache.set(RoutingData.VERSION_KEY, "moved by another process", timeout=None)
    with pytest.raises(ApiError) as refused:
        routing.candidates(account, "chat", model="sandbox-chat")
    assert refused.value.code == "UNKNOWN_MODEL"


def test_a_byok_credential_registered_is_used_at_once(settings):
    settings.OPENAI_API_KEY = ""
    account = make_account()
    with pytest.raises(ApiError) as refused:
        routing.candidates(account, "chat", model="gpt-4o-mini")
    assert refused.value.code == "VENDOR_NOT_CONFIGURED"
    byok.register(
        account, byok.Registration(provider="openai", alias="mine", secret=byok.Secret(api_key="sk-test-own-key-123"))
    )
    found = routing.candidates(account, "chat", model="gpt-4o-mini")
    assert found[0].credential.byok is True and found[0].entry.vendor == "openai"


@pytest.mark.django_db(transaction=True)
def test_with_redis_a_change_made_here_reaches_another_server_process_at_once(settings):
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.skip("needs REDIS_URL: without a shared cache other processes see changes when their copy expires")
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    headers = {"Authorization": f"Bearer {secret}"}
    with live_servers(1) as (url,):
        assert httpx.post(url + "/v1/ai/chat", json=CHAT, headers=headers, timeout=30).status_code == 200
        entry = CatalogModel.objects.get(model_id="sandbox-chat", capability="chat")
        entry.enabled = False
        entry.save()
        unknown = httpx.post(url + "/v1/ai/chat", json=CHAT, headers=headers, timeout=30)
        assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "UNKNOWN_MODEL"
        keys.revoke_key(ProjectKey.objects.get())
        refused = httpx.post(url + "/v1/ai/chat", json=CHAT, headers=headers, timeout=30)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "INVALID_API_KEY"
