"""A SIMULATED OpenAI-compatible upstream for benchmarks: a raw asyncio HTTP/1.1 server on loopback.

Fast enough not to be the bottleneck (no framework, keep-alive, TCP_NODELAY, pre-built replies).
`POST .../chat/completions` answers after a fixed latency with a ~1 KB completion, or, with
`"stream": true`, with N SSE chunks at a fixed interval (chunked transfer encoding, keep-alive),
then a usage chunk and `data: [DONE]`. Every reply says it is SIMULATED (`X-Simulated-Upstream`
header, `chatcmpl-simulated` id, `system_fingerprint: "simulated"`, text starting "SIMULATED").

`POST /_control` with `{"latency_ms", "chunks", "chunk_interval_ms", "reply_bytes"}` changes the
settings of a running server; `GET /_stats` returns the request count.

    .venv/bin/python bench/fake_upstream.py --port 9100 --latency-ms 0 --chunks 20 --chunk-interval-ms 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from dataclasses import asdict, dataclass
from typing import Any

STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
MODEL_FIELD = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
WORDS = "SIMULATED reply from the benchmark upstream; these words stand in for a model's answer. "


@dataclass
class Config:
    latency_ms: float = 0.0
    chunks: int = 20
    chunk_interval_ms: float = 1.0
    reply_bytes: int = 800


class Replies:
    """Pre-built reply bytes per (model, config): the hot path only writes bytes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.requests = 0
        self._plain: dict[bytes, bytes] = {}
        self._stream: dict[bytes, tuple[bytes, list[bytes], bytes]] = {}

    def reconfigure(self, **changes: Any) -> None:
        for key, value in changes.items():
            if hasattr(self.config, key):
                setattr(self.config, key, type(getattr(self.config, key))(value))
        self._plain.clear()
        self._stream.clear()

    def _text(self) -> str:
        n = self.config.reply_bytes
        return (WORDS * (n // len(WORDS) + 1))[:n]

    def _usage(self, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": 12, "completion_tokens": completion_tokens, "total_tokens": 12 + completion_tokens}

    def plain(self, model: bytes) -> bytes:
        reply = self._plain.get(model)
        if reply is None:
            text = self._text()
            body = json.dumps(
                {
                    "id": "chatcmpl-simulated",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model.decode(),
                    "system_fingerprint": "simulated",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": self._usage(len(text) // 4),
                },
                separators=(",", ":"),
            ).encode()
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Simulated-Upstream: true\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
            reply = self._plain[model] = head + body
        return reply

    def stream(self, model: bytes) -> tuple[bytes, list[bytes], bytes]:
        """(response head, one chunked frame per content chunk, the closing frames)."""
        built = self._stream.get(model)
        if built is None:
            name = model.decode()
            n = max(1, self.config.chunks)
            text = self._text()
            size = max(1, len(text) // n)
            pieces = [text[i * size : (i + 1) * size] for i in range(n - 1)] + [text[(n - 1) * size :]]

            def frame(event: dict[str, Any] | str) -> bytes:
                data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
                payload = f"data: {data}\n\n".encode()
                return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"

            def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
                return {
                    "id": "chatcmpl-simulated",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": name,
                    "system_fingerprint": "simulated",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }

            frames = [
                frame(chunk({"role": "assistant", "content": p} if i == 0 else {"content": p}, None))
                for i, p in enumerate(pieces)
            ]
            usage = {**chunk({}, None), "choices": [], "usage": self._usage(len(text) // 4)}
            closing = frame(chunk({}, "stop")) + frame(usage) + frame("[DONE]") + b"0\r\n\r\n"
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"X-Simulated-Upstream: true\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            built = self._stream[model] = (head, frames, closing)
        return built


def _json_response(status: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Simulated-Upstream: true\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, replies: Replies) -> None:
        self.replies = replies
        self.buffer = bytearray()
        self.busy = False
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Parse and answer the next complete request in the buffer, if any."""
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = 0
            lowered = head.lower()
            at = lowered.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = lowered.find(b"\r\n", at + 2)
                length = int(lowered[at + 17 : line_end if line_end > 0 else None].strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            request_line = head.split(b"\r\n", 1)[0]
            self._answer(request_line, body)

    def _answer(self, request_line: bytes, body: bytes) -> None:
        transport = self.transport
        assert transport is not None
        parts = request_line.split(b" ")
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
        if path.startswith(b"/_control") and method == b"POST":
            self.replies.reconfigure(**json.loads(body or b"{}"))
            transport.write(_json_response("200 OK", asdict(self.replies.config)))
            return
        if path.startswith(b"/_stats"):
            transport.write(
                _json_response("200 OK", {"requests": self.replies.requests, **asdict(self.replies.config)})
            )
            return
        if method != b"POST" or not path.endswith(b"/chat/completions"):
            transport.write(_json_response("404 Not Found", {"error": {"message": "SIMULATED upstream: no route"}}))
            return
        self.replies.requests += 1
        found = MODEL_FIELD.search(body)
        model = found.group(1) if found else b"simulated"
        config = self.replies.config
        self.busy = True
        delay = config.latency_ms / 1000
        if STREAM_FLAG.search(body):
            head, frames, closing = self.replies.stream(model)
            self._later(delay, self._stream_start, head, frames, closing, config.chunk_interval_ms / 1000)
        else:
            self._later(delay, self._finish, self.replies.plain(model))

    def _later(self, delay: float, callback: Any, *args: Any) -> None:
        if delay > 0:
            self.loop.call_later(delay, callback, *args)
        else:
            callback(*args)

    def _finish(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        self.busy = False
        self._next()

    def _stream_start(self, head: bytes, frames: list[bytes], closing: bytes, interval: float) -> None:
        if self.transport is None:
            return
        if interval <= 0:
            self._finish(head + b"".join(frames) + closing)
            return
        self.transport.write(head + frames[0])
        self._stream_step(frames, 1, closing, interval)

    def _stream_step(self, frames: list[bytes], index: int, closing: bytes, interval: float) -> None:
        if self.transport is None:
            return
        if index >= len(frames):
            self._finish(closing)
            return
        self.loop.call_later(interval, self._stream_write, frames, index, closing, interval)

    def _stream_write(self, frames: list[bytes], index: int, closing: bytes, interval: float) -> None:
        if self.transport is None:
            return
        self.transport.write(frames[index])
        self._stream_step(frames, index + 1, closing, interval)


async def serve(port: int, config: Config) -> None:
    replies = Replies(config)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(replies), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"SIMULATED upstream on http://127.0.0.1:{port}/v1 {asdict(config)}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed delay before the first byte")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed reply")
    parser.add_argument("--chunk-interval-ms", type=float, default=1.0, help="delay between streamed chunks")
    parser.add_argument("--reply-bytes", type=int, default=800, help="characters of reply text")
    args = parser.parse_args()
    config = Config(args.latency_ms, args.chunks, args.chunk_interval_ms, args.reply_bytes)
    asyncio.run(serve(args.port, config))


if __name__ == "__main__":
    main()
