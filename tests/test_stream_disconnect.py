"""Streams relay each chunk as it is made, and a client that goes away stops the call:
it is charged for what was delivered and its hold is closed."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from billing import ledger
from billing.models import Hold, HoldState, UsageRecord
from gateway.sandbox import tokens
from tests.factories import make_account, make_key
from tests.live import live_servers

USD = 1_000_000_000


@pytest.mark.django_db(transaction=True)
def test_chunks_arrive_as_made_and_a_disconnect_is_billed_for_what_was_delivered():
    account = make_account(credit_nano=USD)
    secret = make_key(account)
    body = {"messages": "Write a long essay about rivers and the sea.", "model": "sandbox-chat", "stream": True}
    with live_servers(1, {"SANDBOX_TOKENS_PER_SECOND": "20"}) as (url,):
        arrivals: list[float] = []
        deltas: list[str] = []
        with httpx.stream(
            "POST", url + "/v1/ai/chat", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    deltas.append(json.loads(line[6:])["delta"])
                    arrivals.append(time.monotonic())
                    if len(deltas) == 5:
                        break  # the client goes away mid-stream
        # Paced at 20 tokens a second, five deltas are made over about 0.2 s: relayed as made, they
        # arrive spread out; a buffered response would deliver them together at the end.
        assert arrivals[-1] - arrivals[0] > 0.1
        deadline = time.monotonic() + 10
        while not UsageRecord.objects.filter(account=account).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    record = UsageRecord.objects.get(account=account)
    assert record.status == "cancelled"
    delivered_tokens = tokens.count_text("".join(deltas))
    # The server may have produced a token or two more than the client read before it noticed.
    assert delivered_tokens <= record.output_tokens <= delivered_tokens + 3
    assert Hold.objects.get(account=account).state == HoldState.SETTLED
    balance = ledger.get_balance(account)
    assert balance.held_nano == 0 and balance.balance_nano == USD - record.cost_nano
