"""Websocket consumers. They stay thin: authenticate, join groups, relay; rules live elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from console.models import Account
from jobs.live import account_group
from playground.sessions import PlaygroundSession, base_url_for_scope, caller_for_scope
from playground.voice import VoiceSession


@database_sync_to_async
def _account_id_for(user: Any) -> str | None:
    if not getattr(user, "is_authenticated", False):
        return None
    account = Account.objects.filter(owner=user).only("public_id").first()
    return account.public_id if account else None


class JsonObjectsConsumer(AsyncJsonWebsocketConsumer):
    """A JSON consumer that hands text which is not JSON on as None, for the session to answer."""

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None  # answered as "Send a JSON object."


class AccountEventsConsumer(AsyncJsonWebsocketConsumer):
    """Live updates for the signed-in user's pages: job state changes, balance changes."""

    group: str | None = None

    async def connect(self) -> None:
        account_id = await _account_id_for(self.scope.get("user"))
        if account_id is None:
            await self.close(code=4401)
            return
        self.group = account_group(account_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"event": "hello", "payload": {"account": account_id}})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_event(self, message: dict[str, Any]) -> None:
        await self.send_json({"event": message["event"], "payload": message["payload"]})


class PlaygroundConsumer(JsonObjectsConsumer):
    """Chat and compare runs for the signed-in user, billed to their current project."""

    session: PlaygroundSession | None = None

    async def connect(self) -> None:
        caller = await caller_for_scope(self.scope)
        if caller is None:
            await self.close(code=4401)
            return
        self.session = PlaygroundSession(caller, base_url_for_scope(self.scope), self.send_json)
        await self.accept()
        await self.send_json({"type": "hello", "project": caller.project.name})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.session is not None:
            await self.session.handle(content)

    async def disconnect(self, code: int) -> None:
        if self.session is not None:
            await self.session.close()


class VoiceConsumer(JsonObjectsConsumer):
    """A realtime voice session opened by a session token (no console sign-in needed): JSON
    control messages, binary 16 kHz PCM16 audio in, binary WAV replies out."""

    session: VoiceSession | None = None
    start_timer: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        # Accepted first, so that a refused token is answered with an error before the close.
        await self.accept()
        self.session = VoiceSession(base_url_for_scope(self.scope), self.send_json, self._send_bytes, self._close)
        token = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if token:
            await self.session.start(token)
        else:
            self.start_timer = asyncio.create_task(self.session.wait_for_start())

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.session is None:
            return
        if bytes_data is not None:
            await self.session.audio(bytes_data)
        else:
            await self.session.handle(await self.decode_json(text_data or ""))

    async def disconnect(self, code: int) -> None:
        if self.start_timer is not None:
            self.start_timer.cancel()
        if self.session is not None:
            await self.session.disconnected()

    async def _send_bytes(self, data: bytes) -> None:
        await self.send(bytes_data=data)

    async def _close(self, code: int) -> None:
        await self.close(code=code)
