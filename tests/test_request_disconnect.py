"""A client that goes away during a plain (non-streamed) chat call: the call shows in the usage
log as cancelled, charged for the prompt the vendor was sent, and its hold is closed at once
instead of keeping the credit held until the sweeper's expiry.

The vendor is SIMULATED: a loopback socket that accepts the call and never answers."""

from __future__ import annotations

import time

import httpx
import pytest

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from tests.factories import make_account, make_key
from tests.live import live_servers

USD = 1_000_000_000


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/ai/chat"])
def test_a_client_that_goes_away_mid_call_is_recorded_as_cancelled_and_its_hold_closed(silent_upstream, route):
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    body = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "Tell me about rivers."}]}
    env = {"OPENAI_COMPATIBLE_BASE_URL": silent_upstream, "OPENAI_COMPATIBLE_API_KEY": "simulated-key"}
    with live_servers(1, env) as (url,):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + route, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=2)
        deadline = time.monotonic() + 10
        while not UsageRecord.objects.filter(account=account).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    record = UsageRecord.objects.get(account=account)
    assert (record.status, record.vendor, record.output_tokens) == ("cancelled", "openai_compatible", 0)
    assert record.input_tokens > 0 and record.cost_nano > 0
    assert Hold.objects.get(account=account).state == HoldState.SETTLED
    balance = ledger.get_balance(account)
    assert balance.held_nano == 0
    assert balance.balance_nano == USD - record.cost_nano
