"""`/v1` is served by a lean Django handler (infrai/asgi.py): the same answers as through the
console's full middleware stack, without running that stack; the console keeps all of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.test import Client

from infrai.asgi import application, django_asgi_app
from tests.factories import make_account, make_key

pytestmark = pytest.mark.django_db(transaction=True)
USD = 1_000_000_000
CHAT = {"messages": "Hello!", "model": "sandbox-chat", "max_tokens": 20}
# Values that differ between two identical calls (the balance: the first pass's calls were charged).
VOLATILE_HEADERS = {"x-request-id", "content-length"}
VOLATILE_FIELDS = {"request_id", "latency_ms", "id", "created", "balance_usd", "available_usd"}


def _send(app: Any, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.request(**request) for request in requests]

    return asyncio.run(run())


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _body(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("application/json"):
        return _stable(response.json())
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
        return [e if e == "[DONE]" else _stable(json.loads(e)) for e in events]
    return response.text


def test_the_api_answers_the_same_as_through_the_console_stack():
    account = make_account(credit_nano=USD)
    auth = {"Authorization": f"Bearer {make_key(account)}"}
    requests: list[dict[str, Any]] = [
        {"method": "POST", "url": "/v1/ai/chat", "json": CHAT, "headers": auth},
        {"method": "POST", "url": "/v1/chat/completions", "json": {**CHAT, "stream": True}, "headers": auth},
        {"method": "POST", "url": "/v1/ai/chat", "json": CHAT},
        {"method": "POST", "url": "/v1/ai/chat", "content": b"{not json", "headers": auth},
        {"method": "POST", "url": "/v1/ai/chat", "json": {**CHAT, "max_tokens": "many"}, "headers": auth},
        {"method": "GET", "url": "/v1/ai/chat", "headers": auth},
        {"method": "GET", "url": "/v1/no/such/route", "headers": auth},
        {"method": "GET", "url": "/v1/account/balance", "headers": auth},
        {"method": "GET", "url": "/v1/openapi.json"},
    ]
    lean = _send(application, requests)
    full = _send(django_asgi_app, requests)
    for request, ours, theirs in zip(requests, lean, full, strict=True):
        what = f"{request['method']} {request['url']}"
        assert ours.status_code == theirs.status_code, what
        assert set(ours.headers) - VOLATILE_HEADERS == set(theirs.headers) - VOLATILE_HEADERS, what
        for name in set(ours.headers) - VOLATILE_HEADERS:
            assert ours.headers[name] == theirs.headers[name], f"{what}: {name}"
        assert _body(ours) == _body(theirs), what
    chat, stream, unauthenticated, bad_json, bad_field, wrong_method, unknown, _, openapi = lean
    assert chat.status_code == 200 and chat.headers["x-request-id"] == chat.json()["_metadata"]["request_id"]
    assert chat.headers["x-frame-options"] == "DENY" and chat.headers["x-content-type-options"] == "nosniff"
    assert stream.headers["content-type"].startswith("text/event-stream") and stream.text.endswith("data: [DONE]\n\n")
    assert unauthenticated.status_code == 401 and unauthenticated.headers["www-authenticate"].startswith("Bearer")
    assert bad_json.json()["error"]["code"] == "INVALID_JSON" and bad_json.headers["x-request-id"]
    assert bad_field.status_code == 400 and bad_field.json()["error"]["field"] == "max_tokens"
    assert wrong_method.status_code == 405
    assert unknown.status_code == 404 and unknown.json()["error"]["code"]
    assert openapi.headers["access-control-allow-origin"] == "*"


def test_the_api_skips_the_console_middleware_and_the_console_keeps_it(monkeypatch):
    sessions_opened: list[str] = []
    real = SessionMiddleware.process_request

    def recording(self: SessionMiddleware, request: Any) -> None:
        sessions_opened.append(request.path)
        real(self, request)

    monkeypatch.setattr(SessionMiddleware, "process_request", recording)
    account = make_account(credit_nano=USD)
    auth = {"Authorization": f"Bearer {make_key(account)}"}
    session = Client()
    session.force_login(account.owner)
    cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session.cookies[settings.SESSION_COOKIE_NAME].value}"}
    api, dashboard, login, forged, docs = _send(
        application,
        [
            {"method": "POST", "url": "/v1/ai/chat", "json": CHAT, "headers": {**auth, **cookie}},
            {"method": "GET", "url": "/", "headers": cookie},
            {"method": "GET", "url": "/login/"},
            {"method": "POST", "url": "/login/", "data": {"email": "mallory@example.com"}},
            {"method": "GET", "url": "/v1/docs"},
        ],
    )
    assert api.status_code == 200 and "set-cookie" not in api.headers and "cookie" not in api.headers.get("vary", "")
    assert "/v1/ai/chat" not in sessions_opened
    assert dashboard.status_code == 200 and account.owner.email in dashboard.text, "the session signs the user in"
    assert login.status_code == 200 and "csrftoken" in login.headers.get("set-cookie", "")
    assert forged.status_code == 403, "CSRF still guards the console's forms"
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert sessions_opened.count("/") == 1 and "/v1/docs" in sessions_opened
