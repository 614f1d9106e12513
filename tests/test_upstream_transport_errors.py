"""How transport failures of a vendor reach the caller: unreachable is not a timeout.

The upstreams here are SIMULATED on loopback: a closed port, a server that accepts and never
answers, a server that hangs up without a reply.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from gateway.vendors.base import ChatRequest, Credential, VendorError
from gateway.vendors.openai_compatible import OpenAICompatible
from tests.live import free_port, listening_socket

REQUEST = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def hanging_up_upstream() -> Iterator[str]:
    def hang_up(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.close()

    yield from listening_socket(hang_up)


async def chat_error(base_url: str) -> VendorError:
    with pytest.raises(VendorError) as raised:
        await OpenAICompatible().chat(REQUEST, Credential(api_key="sk-test", base_url=base_url))
    return raised.value


async def test_a_refused_connection_reads_as_unreachable_not_as_a_timeout():
    error = await chat_error(f"http://127.0.0.1:{free_port()}/v1")
    assert error.code == "UPSTREAM_UNREACHABLE" and error.retryable
    assert "unreachable" in error.message


async def test_a_vendor_that_hangs_up_without_answering_reads_as_unreachable(hanging_up_upstream):
    error = await chat_error(hanging_up_upstream)
    assert error.code == "UPSTREAM_UNREACHABLE" and error.retryable


async def test_a_vendor_that_never_answers_is_a_timeout(silent_upstream, monkeypatch):
    from gateway import http

    short = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
    monkeypatch.setattr(http.client_for, "__defaults__", (short,))
    http._clients.clear()  # noqa: SLF001 - the next client is made with the short timeout
    error = await chat_error(silent_upstream)
    assert error.code == "UPSTREAM_TIMEOUT" and error.status == 504


@pytest.fixture
def answering_upstream() -> Iterator[str]:
    """A SIMULATED OpenAI-compatible upstream on loopback that answers any chat call."""
    from tests.fakes.loopback import JsonHandler, serving

    class Handler(JsonHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = {"choices": [{"message": {"content": "inside"}, "finish_reason": "stop"}], "usage": {}}
            self._json(200, reply)

    with serving(Handler, "/v1") as url:
        yield url.replace("127.0.0.1", "localhost")


async def test_a_byok_base_url_that_resolves_to_a_private_address_is_refused_at_connection_time(
    answering_upstream, settings
):
    # Registration checks the address once; a name can resolve elsewhere later (DNS rebinding),
    # so BYOK calls resolve through a guard at each connection.
    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = False
    with pytest.raises(VendorError) as refused:
        await OpenAICompatible().chat(REQUEST, Credential(api_key="sk-user", base_url=answering_upstream, byok=True))
    assert refused.value.code == "UPSTREAM_UNREACHABLE"
    assert "private address" in refused.value.message

    platform = await OpenAICompatible().chat(REQUEST, Credential(api_key="sk-ours", base_url=answering_upstream))
    assert platform.content == "inside"  # the operator's own vendor URLs are trusted as configured

    settings.BYOK_ALLOW_PRIVATE_BASE_URLS = True
    allowed = await OpenAICompatible().chat(
        REQUEST, Credential(api_key="sk-user", base_url=answering_upstream, byok=True)
    )
    assert allowed.content == "inside"
