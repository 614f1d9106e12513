"""How transport failures of a vendor reach the caller: unreachable is not a timeout.

The upstreams here are SIMULATED on loopback: a closed port, a server that accepts and never
answers, a server that hangs up without a reply.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from gateway.vendors.base import ChatRequest, Credential, VendorError
from gateway.vendors.openai_compatible import OpenAICompatible
from tests.live import free_port

REQUEST = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])


def listening_socket(on_accept) -> Iterator[str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            on_accept(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    held: list[socket.socket] = []
    yield from listening_socket(held.append)
    for conn in held:
        conn.close()


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
