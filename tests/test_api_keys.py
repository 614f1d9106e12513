from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.test import Client

from console.models import ProjectKey
from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db


def _create(client, secret, body, **headers):
    return client.post(
        "/v1/account/keys", json.dumps(body), content_type="application/json", **bearer(secret), **headers
    )


def test_creating_a_key_needs_an_idempotency_key(client):
    secret = make_key(make_account())
    response = _create(client, secret, {"label": "x"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "IDEMPOTENCY_KEY_REQUIRED" and error["field"] == "idempotency_key"
    assert ProjectKey.objects.count() == 1


def test_it_creates_a_key_that_works_and_shows_the_secret_once(client):
    account = make_account()
    secret = make_key(account)
    first = _create(client, secret, {"label": "deploy", "idempotency_key": "k-1"})
    assert first.status_code == 201
    body = first.json()
    assert body["key"].startswith("ifr_pk_proj_") and body["replayed"] is False
    assert body["label"] == "deploy" and body["project"] == account.projects.get().public_id
    assert client.get("/v1/account/balance", **bearer(body["key"])).status_code == 200

    replay = _create(client, secret, {"label": "deploy", "idempotency_key": "k-1"})
    assert replay.status_code == 201
    again = replay.json()
    assert again["id"] == body["id"] and again["key"] is None and again["replayed"] is True
    assert "shown only then" in again["message"]
    assert ProjectKey.objects.count() == 2


def test_the_idempotency_key_header_works_too(client):
    secret = make_key(make_account())
    first = _create(client, secret, {"label": "h"}, HTTP_IDEMPOTENCY_KEY="hdr-1").json()
    second = _create(client, secret, {"label": "h"}, HTTP_IDEMPOTENCY_KEY="hdr-1").json()
    assert first["id"] == second["id"] and second["replayed"] is True


def test_the_same_idempotency_key_with_another_body_is_a_422(client):
    secret = make_key(make_account())
    _create(client, secret, {"label": "a", "idempotency_key": "k-2"})
    response = _create(client, secret, {"label": "b", "idempotency_key": "k-2"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_idempotency_keys_are_per_account(client):
    alice_secret = make_key(make_account("alice@example.com"))
    bob_secret = make_key(make_account("bob@example.com"))
    a = _create(client, alice_secret, {"label": "x", "idempotency_key": "same"}).json()
    b = _create(client, bob_secret, {"label": "x", "idempotency_key": "same"}).json()
    assert a["id"] != b["id"] and b["replayed"] is False and b["key"]


def test_bad_input_names_the_field(client):
    secret = make_key(make_account())
    too_long = _create(client, secret, {"label": "x" * 81, "idempotency_key": "k"})
    assert too_long.status_code == 400 and too_long.json()["error"]["field"] == "label"
    not_json = client.post("/v1/account/keys", "{nope", content_type="application/json", **bearer(secret))
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "INVALID_JSON"
    not_object = client.post("/v1/account/keys", "[1]", content_type="application/json", **bearer(secret))
    assert not_object.status_code == 400
    bad_key = _create(client, secret, {"idempotency_key": 5})
    assert bad_key.status_code == 400 and bad_key.json()["error"]["field"] == "idempotency_key"
    wrong_method = client.put("/v1/account/keys", **bearer(secret))
    assert wrong_method.status_code == 405


def test_listing_and_revoking_keys_through_the_api(client):
    secret = make_key(make_account())
    created = _create(client, secret, {"label": "temp", "idempotency_key": "t"}).json()
    listing = client.get("/v1/account/keys", **bearer(secret)).json()["data"]
    assert {k["label"] for k in listing} == {"test", "temp"}
    assert all("key" not in k for k in listing)
    revoked = client.delete(f"/v1/account/keys/{created['id']}", **bearer(secret))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.get("/v1/account/balance", **bearer(created["key"])).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_creations_with_one_idempotency_key_create_one_key():
    secret = make_key(make_account())
    results: list[dict] = []
    barrier = threading.Barrier(20)

    def worker() -> None:
        barrier.wait()
        try:
            response = _create(Client(), secret, {"label": "race", "idempotency_key": "race-1"})
            results.append({"status": response.status_code, **response.json()})
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r["status"] for r in results} == {201}
    assert len({r["id"] for r in results}) == 1
    assert sum(1 for r in results if r["key"]) == 1
    assert ProjectKey.objects.filter(label="race").count() == 1
