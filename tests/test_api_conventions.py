"""Conventions every /v1 call follows: _metadata on errors too, typed routing fields."""

from __future__ import annotations

import json

import pytest

from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db


def test_errors_carry_metadata_with_the_request_id(client):
    secret = make_key(make_account(credit_nano=10**9))
    response = client.post("/v1/ai/chat", "{}", content_type="application/json", **bearer(secret))
    body = response.json()
    assert response.status_code == 400
    assert body["_metadata"]["request_id"] == body["error"]["request_id"] == response["X-Request-Id"]
    assert body["_metadata"]["cost_usd"] == "0.00"


@pytest.mark.parametrize("path", ["/v1/ai/embed", "/v1/ai/rerank", "/v1/ai/image", "/v1/ai/tts", "/v1/ai/vision"])
def test_a_routing_field_of_the_wrong_type_is_refused_not_ignored(client, path):
    secret = make_key(make_account(credit_nano=10**9))
    body = {"model": 5, "input": "x", "query": "q", "documents": ["d"], "prompt": "p", "images": [{"base64": "aGk="}]}
    response = client.post(path, json.dumps(body), content_type="application/json", **bearer(secret))
    assert response.status_code == 400 and response.json()["error"]["field"] == "model"


def test_ai_chat_accepts_max_completion_tokens(client):
    secret = make_key(make_account(credit_nano=10**9))
    body = {"messages": "Tell me a long story about the sea.", "max_completion_tokens": 3}
    reply = client.post("/v1/ai/chat", json.dumps(body), content_type="application/json", **bearer(secret)).json()
    assert reply["usage"]["completion_tokens"] == 3 and reply["finish_reason"] == "length"
