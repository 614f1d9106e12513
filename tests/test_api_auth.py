from __future__ import annotations

import pytest
from django.utils import timezone

from console import keys
from console.models import ProjectKey
from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db


def test_it_refuses_a_call_without_a_key(client):
    response = client.get("/v1/account/balance")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "MISSING_API_KEY"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_a_non_bearer_scheme(client):
    response = client.get("/v1/account/balance", HTTP_AUTHORIZATION="Basic abc")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "MALFORMED_AUTHORIZATION"


def test_it_refuses_a_malformed_key(client):
    response = client.get("/v1/account/balance", **bearer("sk-not-ours"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "MALFORMED_API_KEY"


def test_it_refuses_an_unknown_key(client):
    response = client.get("/v1/account/balance", **bearer("ifr_pk_proj_" + "A" * 40))
    body = response.json()
    assert response.status_code == 401
    assert body["error"]["code"] == "INVALID_API_KEY"
    assert "A" * 40 not in body["error"]["message"]


def test_it_refuses_a_revoked_key_at_once(client):
    account = make_account()
    secret = make_key(account)
    assert client.get("/v1/account/balance", **bearer(secret)).status_code == 200
    keys.revoke_key(ProjectKey.objects.get())
    response = client.get("/v1/account/balance", **bearer(secret))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_API_KEY"


def test_a_valid_key_gets_past_authentication_on_any_v1_route(client):
    secret = make_key(make_account())
    unknown = client.get("/v1/no/such/route", **bearer(secret))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NOT_FOUND"
    served = client.post("/v1/ai/batch/submit", "{}", content_type="application/json", **bearer(secret))
    assert served.status_code == 400 and served.json()["error"]["field"] == "requests"


def test_every_answer_carries_a_uuid7_request_id(client):
    secret = make_key(make_account())
    response = client.get("/v1/account/balance", **bearer(secret))
    request_id = response["X-Request-Id"]
    assert request_id[14] == "7"
    assert response.json()["_metadata"]["request_id"] == request_id


def test_it_records_when_a_key_was_last_used(client):
    account = make_account()
    secret = make_key(account)
    before = timezone.now()
    client.get("/v1/account/balance", **bearer(secret))
    key = ProjectKey.objects.get()
    assert key.last_used_at is not None and key.last_used_at >= before


def test_the_stored_key_is_an_hmac_not_the_key(client):
    secret = make_key(make_account())
    key = ProjectKey.objects.get()
    assert secret not in (key.key_hash, key.lookup_prefix)
    assert key.key_hash == keys.hash_key(secret)
    assert len(secret) >= len("ifr_pk_proj_") + 32
    assert secret.startswith("ifr_pk_proj_")
