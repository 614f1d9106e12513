"""Per-key rate limits on /v1: a clear 429 with Retry-After; one key's limit never touches another's."""

from __future__ import annotations

import pytest

from tests.factories import bearer, make_account, make_key

pytestmark = pytest.mark.django_db


def test_a_key_over_its_limit_gets_429_with_retry_after(client, settings):
    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 3
    noisy = make_key(make_account("noisy@example.com"))
    quiet = make_key(make_account("quiet@example.com"))
    statuses = [client.get("/v1/account/balance", **bearer(noisy)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.get("/v1/account/balance", **bearer(noisy))
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert client.get("/v1/account/balance", **bearer(quiet)).status_code == 200


def test_the_limiter_fails_open_when_the_cache_is_down(client, settings, monkeypatch):
    # A real Redis killed under a running server: tests/test_fault_injection.py.
    from infrai import ratelimit

    settings.API_RATE_LIMIT_PER_KEY_PER_MINUTE = 1

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(ratelimit, "_count", down)
    secret = make_key(make_account())
    assert [client.get("/v1/account/balance", **bearer(secret)).status_code for _ in range(3)] == [200, 200, 200]
