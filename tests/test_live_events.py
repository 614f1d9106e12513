"""The owner's pages get job events over the websocket; others and strangers do not."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from infrai.asgi import application
from jobs.live import account_group
from tests.factories import make_account

pytestmark = pytest.mark.django_db(transaction=True)


async def _connect(session_cookie: str | None, origin: bytes = b"http://testserver") -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"testserver")]
    if session_cookie:
        headers.append((b"cookie", f"sessionid={session_cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/events/", headers=headers)


def _session_for(account) -> str:
    client = Client()
    client.force_login(account.owner)
    return client.cookies["sessionid"].value


async def test_the_owner_receives_events_sent_to_their_account_group():
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    alice = await sync_to_async(make_account)("alice@example.com")
    bob = await sync_to_async(make_account)("bob@example.com")
    alice_ws = await _connect(await sync_to_async(_session_for)(alice))
    bob_ws = await _connect(await sync_to_async(_session_for)(bob))
    assert (await alice_ws.connect())[0] and (await bob_ws.connect())[0]
    assert (await alice_ws.receive_json_from())["event"] == "hello"
    assert (await bob_ws.receive_json_from())["event"] == "hello"

    await get_channel_layer().group_send(
        account_group(alice.public_id), {"type": "job.event", "event": "batch.updated", "payload": {"id": "batch_1"}}
    )
    assert await alice_ws.receive_json_from(timeout=2) == {"event": "batch.updated", "payload": {"id": "batch_1"}}
    assert await bob_ws.receive_nothing(timeout=0.3)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_a_stranger_without_a_session_is_refused():
    ws = await _connect(None)
    connected, code = await ws.connect()
    assert not connected or code == 4401


async def test_another_origin_is_refused():
    from asgiref.sync import sync_to_async

    account = await sync_to_async(make_account)()
    ws = await _connect(await sync_to_async(_session_for)(account), origin=b"http://evil.example")
    connected, _ = await ws.connect()
    assert not connected
