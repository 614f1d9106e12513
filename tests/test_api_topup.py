"""POST /v1/account/topup: a checkout URL from the API, paid on the local Stripe stand-in."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from django.conf import settings as django_settings

from billing import ledger
from devtools.stripe_standin.runner import running_standin
from tests.factories import bearer, make_account, make_key

USD = 1_000_000_000


def post(client, body, secret):
    return client.post("/v1/account/topup", json.dumps(body), content_type="application/json", **bearer(secret))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "amount_usd"),
        ({"amount_usd": "ten"}, "amount_usd"),
        ({"amount_usd": "0.5"}, "amount_usd"),
        ({"amount_usd": "100000"}, "amount_usd"),
        ({"amount_usd": "5.001"}, "amount_usd"),
    ],
)
def test_bad_amounts_are_a_4xx_naming_amount_usd(client, body, field):
    secret = make_key(make_account())
    response = post(client, body, secret)
    assert response.status_code == 400 and response.json()["error"]["field"] == field


@pytest.mark.django_db(transaction=True)
def test_a_402_leads_through_the_api_top_up_to_credit(client, live_server, settings):
    account = make_account()
    secret = make_key(account)
    refused = client.post(
        "/v1/ai/chat", json.dumps({"messages": "hi"}), content_type="application/json", **bearer(secret)
    )
    assert refused.status_code == 402
    with running_standin(f"{live_server.url}/billing/stripe/webhook/", django_settings.STRIPE_WEBHOOK_SECRET) as url:
        settings.STRIPE_API_BASE = url
        response = post(client, {"amount_usd": "10"}, secret)
        assert response.status_code == 200, response.content
        checkout_url = response.json()["checkout_url"]
        page = httpx.get(checkout_url).text
        assert "$10.00" in page and "test mode" in page.lower()
        token = re.search(r"name='token' value='([^']+)'", page).group(1)
        httpx.post(checkout_url, data={"token": token, "action": "pay"})
        deadline = time.monotonic() + 10
        while ledger.get_balance(account).balance_nano != 10 * USD and time.monotonic() < deadline:
            time.sleep(0.1)
    assert ledger.get_balance(account).balance_nano == 10 * USD
    again = client.post(
        "/v1/ai/chat", json.dumps({"messages": "hi"}), content_type="application/json", **bearer(secret)
    )
    assert again.status_code == 200
