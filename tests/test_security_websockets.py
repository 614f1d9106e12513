"""Issue #7: every websocket path of playground/routing.py, through the real ASGI application,
refuses a handshake from another origin, one without an origin, and one without a session."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls.resolvers import RoutePattern

from console.models import Account
from infrai.asgi import application
from playground.routing import websocket_urlpatterns
from tests.factories import make_account

pytestmark = pytest.mark.django_db(transaction=True)

SOCKET_PATHS = ["/" + str(p.pattern) for p in websocket_urlpatterns]
FOREIGN_ORIGINS = [
    b"http://evil.example",
    b"http://testserver.evil.example",  # a look-alike that starts with an allowed host
    b"https://evil.example:443",
    b"null",  # what a sandboxed iframe or a file:// page sends
]


def test_every_websocket_path_is_plain_and_swept():
    with_params = [str(p.pattern) for p in websocket_urlpatterns if not isinstance(p.pattern, RoutePattern)]
    with_params += [str(p.pattern) for p in websocket_urlpatterns if getattr(p.pattern, "converters", None)]
    assert not with_params, f"Websocket paths with parameters need an isolation test of their own: {with_params}"
    assert {"/ws/events/", "/ws/playground/"} <= set(SOCKET_PATHS)


def _session_for(account: Account) -> str:
    client = Client()
    client.force_login(account.owner)
    return client.cookies["sessionid"].value


def _socket(path: str, session: str | None, origin: bytes | None) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin))
    if session:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def _connects(path: str, session: str | None, origin: bytes | None) -> bool:
    socket = _socket(path, session, origin)
    connected, _ = await socket.connect(timeout=5)
    if connected:
        await socket.disconnect()
    return connected


@pytest.mark.parametrize("path", SOCKET_PATHS)
async def test_a_signed_in_same_origin_handshake_is_accepted(path):
    """The control: the refusals below are about origin and session, not a broken socket."""
    session = await sync_to_async(_session_for)(await sync_to_async(make_account)())
    assert await _connects(path, session, b"http://testserver")


@pytest.mark.parametrize("path", SOCKET_PATHS)
@pytest.mark.parametrize("origin", FOREIGN_ORIGINS, ids=lambda o: o.decode())
async def test_a_cross_origin_handshake_is_refused_even_with_a_valid_session(path, origin):
    session = await sync_to_async(_session_for)(await sync_to_async(make_account)())
    assert not await _connects(path, session, origin)


@pytest.mark.parametrize("path", SOCKET_PATHS)
async def test_a_handshake_without_an_origin_is_refused(path):
    session = await sync_to_async(_session_for)(await sync_to_async(make_account)())
    assert not await _connects(path, session, None)


async def _close_code(socket: WebsocketCommunicator) -> int | None:
    """Read what the server sends until it closes; the close code. Only error messages may come first."""
    while True:
        message = await socket.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            return message.get("code")
        if message.get("text"):
            assert "error" in message["text"], f"an unauthenticated socket was sent {message['text']}"
        assert not message.get("bytes"), "an unauthenticated socket was sent binary data"


@pytest.mark.parametrize("path", SOCKET_PATHS)
@pytest.mark.parametrize(
    ("session", "query"), [(None, ""), ("not-a-session-key", "?token=forged")], ids=["no cookie", "forged credentials"]
)
async def test_an_anonymous_handshake_is_refused(path, session, query):
    socket = _socket(path + query, session, b"http://testserver")
    connected, code = await socket.connect(timeout=5)
    if connected:  # a socket opened by a session token accepts first, then answers the token and closes
        await socket.send_json_to({"type": "start", "token": "forged"})
        code = await _close_code(socket)
    assert code == 4401
