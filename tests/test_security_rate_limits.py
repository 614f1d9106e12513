"""Issue #7: what tests/test_rate_limits.py and tests/test_magic_link.py leave out of the limits
per key (/v1) and per IP and address (sign-in): async routes share the key's count, an address
cannot dodge its limit by its spelling, and one IP's limit blocks that IP only."""

from __future__ import annotations

import json

import pytest
from django.core import mail

from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db
USD = 10**9


def test_sync_and_async_routes_count_against_one_limit_per_key(client, settings):
    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 3
    secret = make_key(make_account(credit_nano=USD))
    count = {
        "path": "/v1/ai/tokens/count",
        "data": json.dumps({"messages": "hello"}),
        "content_type": "application/json",
    }
    statuses = [
        client.get("/v1/account/balance", **bearer(secret)).status_code,
        client.post(**count, **bearer(secret)).status_code,
        client.get("/v1/account/balance", **bearer(secret)).status_code,
        client.post(**count, **bearer(secret)).status_code,
    ]
    assert statuses == [200, 200, 200, 429]
    streamed = client.post(
        "/v1/ai/chat", json.dumps({"messages": "hi", "stream": True}), content_type="application/json", **bearer(secret)
    )
    assert streamed.status_code == 429 and streamed.json()["error"]["code"] == "RATE_LIMITED"


def _request_link(client, email: str, ip: str):
    return client.post("/login/", {"email": email}, REMOTE_ADDR=ip)


def test_an_address_cannot_dodge_its_limit_by_case_or_spaces(client, settings):
    settings.MAGIC_LINK_PER_ADDRESS_PER_HOUR = 2
    assert _request_link(client, "dana@example.com", "10.0.0.1").status_code == 302
    assert _request_link(client, "Dana@EXAMPLE.com", "10.0.0.2").status_code == 302
    blocked = _request_link(client, "  DANA@example.COM ", "10.0.0.3")
    assert blocked.status_code == 429
    assert b"Too many sign-in links were sent to this address" in blocked.content
    assert len(mail.outbox) == 2


def test_one_ips_sign_in_limit_does_not_block_other_ips(client, settings):
    settings.MAGIC_LINK_PER_IP_PER_HOUR = 2
    for n in range(2):
        assert _request_link(client, f"user{n}@example.com", "10.0.0.1").status_code == 302
    assert _request_link(client, "user8@example.com", "10.0.0.1").status_code == 429
    assert _request_link(client, "user9@example.com", "10.0.0.2").status_code == 302
    assert [m.to for m in mail.outbox] == [["user0@example.com"], ["user1@example.com"], ["user9@example.com"]]
