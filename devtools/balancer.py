"""A small round-robin TCP balancer for `make cluster`: one port in front of several daphne processes.

It works at the TCP level, so HTTP keep-alive, streamed responses and websockets pass through
untouched (a connection stays on the backend it was given). A backend that refuses a connection
is skipped for that connection. For development and tests on one machine; in production use
your load balancer (nginx, HAProxy, a cloud balancer), see README "Deployment".

    python -m devtools.balancer --listen 127.0.0.1:8000 --backend 127.0.0.1:8001 --backend 127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
from collections.abc import Sequence

log = logging.getLogger("devtools.balancer")
CONNECT_TIMEOUT_SECONDS = 5.0


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class RoundRobinBalancer:
    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        if not backends:
            raise ValueError("at least one backend is needed")
        self.backends = list(backends)
        self._next = itertools.cycle(range(len(self.backends)))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            host, port = self.backends[next(self._next)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_SECONDS)
            except (OSError, TimeoutError):
                log.warning("backend %s:%s refused a connection; trying the next", host, port)
        return None

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            client_writer.close()
            return
        backend_reader, backend_writer = upstream
        try:
            await asyncio.gather(_pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer))
        finally:
            for writer in (backend_writer, client_writer):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    async def serve(self, host: str, port: int) -> None:
        server = await asyncio.start_server(self.handle, host, port, reuse_address=True)
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        targets = ", ".join(f"{h}:{p}" for h, p in self.backends)
        print(f"balancer on {host}:{port} -> {targets}", flush=True)
        async with server:
            await stopped.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=parse_address, required=True, help="HOST:PORT to accept connections on")
    parser.add_argument("--backend", type=parse_address, action="append", required=True, help="HOST:PORT, repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(RoundRobinBalancer(args.backend).serve(*args.listen))


if __name__ == "__main__":
    main()
