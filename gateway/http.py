"""The one seam for outbound HTTP to vendors.

`client_for(role)` returns a pooled `httpx.AsyncClient` per vendor role and event loop, using
the aiohttp transport (3-6x faster than httpx's default under concurrency; see
shared/PERFORMANCE.md). Every client has explicit timeouts. User-supplied URLs (BYOK base URLs,
media URLs) go through `check_public_url` when given, which refuses private addresses unless
BYOK_ALLOW_PRIVATE_BASE_URLS allows them, and are then called through a `public_only` client
whose resolver drops private addresses at each connection, so a name that resolves elsewhere
later (DNS rebinding) still cannot reach inside.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp import transport as aiohttp_transport

if TYPE_CHECKING:
    from gateway.vendors.base import Credential

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


class PublicAddressResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's threaded resolver, keeping only globally routable addresses.

    aiohttp does not call the resolver for IP literals; those are refused by `check_public_url`
    when the URL is registered or given, and an IP literal cannot change what it points at."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        public = [info for info in found if ipaddress.ip_address(info["host"]).is_global]
        if not public:
            # aiohttp shows only strerror in its message, so the errno form carries the reason.
            raise OSError(errno.EACCES, f"{host} resolves to a private address; calls to it are refused")
        return public

    async def close(self) -> None:
        await self._inner.close()


def _public_only_session(limits: httpx.Limits) -> Callable[[], aiohttp.ClientSession]:
    def make() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 100,
            keepalive_timeout=limits.keepalive_expiry,
            resolver=PublicAddressResolver(),
        )
        return aiohttp.ClientSession(connector=connector)

    return make


def client_for(role: str, timeout: httpx.Timeout = DEFAULT_TIMEOUT, *, public_only: bool = False) -> httpx.AsyncClient:
    """A pooled client for `role` (one per vendor) on the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    key = f"{role}:public" if public_only else role
    client = per_loop.get(key)
    if client is None or client.is_closed:
        discard_clients_of_closed_loops()
        limits = httpx.Limits(max_connections=settings.UPSTREAM_MAX_CONNECTIONS, max_keepalive_connections=100)
        transport = AiohttpTransport(limits=limits, client=_public_only_session(limits) if public_only else None)
        client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": "infrai-console/0.1"},
            follow_redirects=False,
        )
        per_loop[key] = client
    return client


def user_urls_public_only() -> bool:
    """Whether URLs that users supply (BYOK base URLs, media URLs) must reach public addresses only."""
    return not settings.BYOK_ALLOW_PRIVATE_BASE_URLS


def client_for_credential(role: str, credential: Credential) -> httpx.AsyncClient:
    """The client for a call with `credential`: a BYOK base URL is the user's, so public only."""
    return client_for(role, public_only=credential.byok and user_urls_public_only())


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
