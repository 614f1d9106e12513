"""Input no field can hold is a 4xx naming it, never a 500 (found by the fuzz run)."""

from __future__ import annotations

import json

import pytest

from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def secret():
    return make_key(make_account(credit_nano=10**9))


def post(client, path, raw: str, secret):
    return client.post(path, raw, content_type="application/json", **bearer(secret))


def test_a_nul_character_is_refused_naming_the_field(client, secret):
    response = post(client, "/v1/ai/chat", json.dumps({"messages": "hi", "model": "a\u0000"}), secret)
    assert response.status_code == 400 and response.json()["error"]["field"] == "model"
    assert client.get("/v1/video/status/vid_%00", **bearer(secret)).status_code == 400


def test_a_lone_surrogate_is_refused(client, secret):
    response = post(client, "/v1/account/keys", '{"label": "\\ud800", "idempotency_key": "k"}', secret)
    assert response.status_code == 400 and response.json()["error"]["field"] == "label"


def test_absurd_nesting_is_refused(client, secret):
    deep = "[" * 1000 + "]" * 1000
    response = post(client, "/v1/ai/chat", '{"messages": "hi", "tools": ' + deep + "}", secret)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_JSON"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ai/image", {"prompt": "x", "n": None, "size": "256x256"}),
        ("/v1/ai/cost/estimate", {"messages": "hi", "expected_output_tokens": None}),
        ("/v1/ai/realtime/token", {"ttl_seconds": None}),
    ],
)
def test_an_explicit_null_means_the_default(client, secret, path, body):
    assert post(client, path, json.dumps(body), secret).status_code == 200


def test_whole_numbers_written_as_floats_are_integers(client, secret):
    reply = post(client, "/v1/ai/chat", json.dumps({"messages": "Tell me a story", "max_tokens": 3.0}), secret)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3
    assert post(client, "/v1/ai/chat", json.dumps({"messages": "hi", "max_tokens": 3.5}), secret).status_code == 400


def test_a_huge_top_up_amount_is_a_4xx(client, secret):
    response = post(client, "/v1/account/topup", json.dumps({"amount_usd": "100000000000000000000000000"}), secret)
    assert response.status_code == 400 and response.json()["error"]["field"] == "amount_usd"
    assert post(client, "/v1/account/topup", '{"amount_usd": 1e26}', secret).status_code == 400


def test_the_docs_answer_other_methods_with_a_json_405(client):
    for path in ("/v1/docs", "/v1/openapi.json"):
        response = client.put(path)
        assert response.status_code == 405 and response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
