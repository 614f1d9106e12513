"""A client that goes away during a plain (non-streamed) chat call: the call shows in the usage
log as cancelled, charged for the prompt the vendor was sent, and its hold is closed at once
instead of keeping the credit held until the sweeper's expiry; so is a hold whose caller went
away while it was being written.

The vendor is SIMULATED: a loopback socket that accepts the call and never answers."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from console.accounts import default_project
from gateway import metering
from gateway.api import Caller
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


@pytest.mark.django_db(transaction=True)
async def test_a_caller_gone_while_its_hold_is_written_leaves_no_credit_held(monkeypatch):
    # The hold's statement has committed but its answer is still on the way when the client
    # goes: SIMULATED by a pause after the real reserve.
    account = await sync_to_async(make_account)(credit_nano=USD)
    caller = Caller(key=None, project=await sync_to_async(default_project)(account), account=account)
    written = asyncio.Event()
    real_reserve = ledger.areserve

    async def answer_still_on_the_way(*args, **kwargs):
        hold = await real_reserve(*args, **kwargs)
        written.set()
        await asyncio.sleep(0.5)
        return hold

    monkeypatch.setattr(ledger, "areserve", answer_still_on_the_way)
    call = asyncio.ensure_future(metering.hold_or_402("http://testserver", caller, "req_gone", 5_000_000, "chat"))
    await written.wait()
    assert (await sync_to_async(ledger.get_balance)(account)).held_nano == 5_000_000
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert (await sync_to_async(Hold.objects.get)(account=account)).state == HoldState.RELEASED
    balance = await sync_to_async(ledger.get_balance)(account)
    assert (balance.balance_nano, balance.held_nano) == (USD, 0)
