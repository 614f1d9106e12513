"""The one seam for outbound HTTP to vendors.

`client_for(role)` returns a pooled `httpx.AsyncClient` per vendor role and event loop, using
the aiohttp transport (3-6x faster than httpx's default under concurrency; see
shared/PERFORMANCE.md). Every client has explicit timeouts. User-supplied base URLs (BYOK) go
through `check_public_url`, which refuses private addresses unless a setting allows them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import weakref
from urllib.parse import urlsplit

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp import transport as aiohttp_transport

# httpx-aiohttp maps every aiohttp.ClientConnectionError (a refused connection, a server hanging
# up) to httpx.ConnectTimeout, so an unreachable vendor read as a timeout. Its mapper picks the
# most specific httpx class among the matches, so a general TransportError here lets the precise
# entries win: refused -> ConnectError, hung up -> RemoteProtocolError, timeouts stay timeouts.
aiohttp_transport.AIOHTTP_EXC_MAP[aiohttp.ClientConnectionError] = httpx.TransportError
aiohttp_transport.AIOHTTP_EXC_MAP[aiohttp.ServerDisconnectedError] = httpx.RemoteProtocolError
aiohttp_transport.AIOHTTP_EXC_MAP[aiohttp.ConnectionTimeoutError] = httpx.ConnectTimeout

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=10.0)
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def client_for(role: str, timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """A pooled client for `role` (one per vendor) on the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    client = per_loop.get(role)
    if client is None or client.is_closed:
        discard_clients_of_closed_loops()
        limits = httpx.Limits(max_connections=settings.UPSTREAM_MAX_CONNECTIONS, max_keepalive_connections=100)
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            timeout=timeout,
            headers={"User-Agent": "infrai-console/0.1"},
            follow_redirects=False,
        )
        per_loop[role] = client
    return client


def discard_clients_of_closed_loops() -> None:
    """Drop pooled clients whose event loop has closed, releasing their aiohttp sessions.

    A server keeps one loop for its life; callers that run each request on a fresh loop
    (asgiref's async_to_sync, as Django's test client does) would otherwise leave one unclosed
    session per loop. The loop is gone, so the session cannot be awaited closed: its connector
    is closed synchronously, which is what aiohttp's own close does once the loop is stopped.
    """
    for loop in list(_clients):
        if not loop.is_closed():
            continue
        for client in _clients.pop(loop, {}).values():
            session = getattr(client._transport, "client", None)  # noqa: SLF001
            connector = getattr(session, "_connector", None)
            if connector is not None and not connector.closed:
                connector._close()  # noqa: SLF001
            if session is not None:
                session._connector = None  # noqa: SLF001


class UnsafeUrl(ValueError):
    pass


def check_public_url(url: str) -> str:
    """Refuse a base URL whose host resolves to a private, loopback or link-local address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("base_url must be an http(s) URL with a host")
    if settings.BYOK_ALLOW_PRIVATE_BASE_URLS:
        return url
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror as exc:
        raise UnsafeUrl(f"base_url host {parts.hostname!r} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise UnsafeUrl(f"base_url host {parts.hostname!r} resolves to a private address ({address})")
    return url
