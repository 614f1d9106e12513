"""The raw pass-through floor: the least an ASGI gateway can do, served the same way as the gateway.

A bare ASGI app (no framework, no auth, no database) that forwards every POST to
`RAW_FLOOR_UPSTREAM` + path with `httpx.AsyncClient` on the aiohttp transport (the client
`gateway/http.py` uses) and relays the answer, streaming chunk by chunk when the upstream
streams. Served by daphne like the gateway:

    RAW_FLOOR_UPSTREAM=http://127.0.0.1:9100 .venv/bin/python -m daphne -p 9200 bench.raw_floor:application
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPSTREAM = os.environ.get("RAW_FLOOR_UPSTREAM", "http://127.0.0.1:9100").rstrip("/")
FORWARDED = (b"authorization", b"content-type")
_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        _client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            timeout=httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=10.0),
        )
    return _client


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in FORWARDED}
    upstream = client().build_request(scope["method"], UPSTREAM + scope["path"], content=body, headers=headers)
    response = await client().send(upstream, stream=True)
    try:
        content_type = response.headers.get("content-type", "application/json").encode()
        if content_type.startswith(b"text/event-stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            data = await response.aread()
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": data})
    finally:
        await response.aclose()
