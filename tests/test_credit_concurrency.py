"""No overspend across server processes: 100 simultaneous calls against credit for 10."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from billing import ledger
from billing.models import UsageRecord
from gateway import catalog
from gateway.models import CatalogModel
from gateway.sandbox import tokens
from tests.factories import make_account, make_key
from tests.live import live_servers

BODY = {"messages": "Count to three.", "model": "sandbox-chat", "max_tokens": 50}


@pytest.mark.django_db(transaction=True)
def test_one_hundred_calls_across_two_server_processes_never_spend_more_than_the_credit(on_postgres):
    entry = CatalogModel.objects.get(model_id="sandbox-chat", capability="chat")
    prompt = tokens.count_messages([{"role": "user", "content": BODY["messages"]}])
    hold_per_call = catalog.token_cost_nano(entry, prompt, BODY["max_tokens"])
    credit = 10 * hold_per_call
    account = make_account(credit_nano=credit)
    secret = make_key(account)

    async def fire(urls: list[str]) -> list[int]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:

            async def one(i: int) -> int:
                response = await client.post(
                    urls[i % len(urls)] + "/v1/ai/chat", json=BODY, headers={"Authorization": f"Bearer {secret}"}
                )
                if response.status_code == 402:
                    assert response.json()["error"]["code"] == "INSUFFICIENT_CREDIT"
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(100)))

    with live_servers(2) as urls:
        statuses = asyncio.run(fire(urls))

    assert set(statuses) <= {200, 402}, statuses
    assert statuses.count(200) >= 10, "the credit covers at least ten worst-case calls"
    balance = ledger.get_balance(account)
    charged = sum(UsageRecord.objects.filter(account=account).values_list("cost_nano", flat=True))
    assert UsageRecord.objects.filter(account=account).count() == statuses.count(200)
    assert charged <= credit and balance.balance_nano == credit - charged >= 0
    assert balance.held_nano == 0
    assert ledger.check_consistency() == []
