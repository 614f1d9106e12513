"""A SIMULATED OpenAI-compatible upstream for tests: a real HTTP server on loopback speaking
OpenAI's wire format (JSON, SSE with `data: [DONE]`, error bodies), with scripted failures."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.loopback import JsonHandler, serving

# A 1x1 PNG, enough for clients to decode.
SIMULATED_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


@dataclass
class Script:
    status: int = 200
    reply: str = "Hello from the simulated upstream."
    prompt_tokens: int = 11
    cut_after: int | None = None  # stream: drop the connection after N chunks
    malformed: bool = False  # stream: send a broken event
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802
            script.requests.append({"path": self.path, "body": None})
            script.auth_headers.append(self.headers.get("Authorization", ""))
            if script.status != 200:
                self._json(
                    script.status, {"error": {"message": f"simulated {script.status}", "type": "invalid_request_error"}}
                )
                return
            self._json(
                200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "openai"}]}
            )

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.endswith("/audio/transcriptions"):
                script.requests.append({"path": self.path, "body": {"multipart_bytes": len(raw)}})
                script.auth_headers.append(self.headers.get("Authorization", ""))
                if script.status != 200:
                    self._json(script.status, {"error": {"message": f"simulated {script.status}"}})
                    return
                self._json(
                    200,
                    {
                        "text": script.reply,
                        "language": "english",
                        "duration": 2.5,
                        "segments": [{"start": 0.0, "end": 2.5, "text": script.reply}],
                    },
                )
                return
            body = json.loads(raw or b"{}")
            script.requests.append({"path": self.path, "body": body})
            script.auth_headers.append(self.headers.get("Authorization", ""))
            if script.delay:
                time.sleep(script.delay)
            if script.status != 200:
                self._json(
                    script.status,
                    {"error": {"message": f"simulated {script.status}", "type": "server_error", "code": None}},
                )
                return
            if self.path.endswith("/images/generations"):
                png = base64.b64encode(SIMULATED_PNG).decode()
                self._json(200, {"created": 0, "data": [{"b64_json": png} for _ in range(body.get("n", 1))]})
                return
            if self.path.endswith("/audio/speech"):
                audio = b"ID3simulated-mp3-bytes"
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Content-Length", str(len(audio)))
                self.end_headers()
                self.wfile.write(audio)
                return
            if self.path.endswith("/embeddings"):
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                dims = body.get("dimensions") or 8
                self._json(
                    200,
                    {
                        "object": "list",
                        "model": body["model"],
                        "data": [
                            {"object": "embedding", "index": i, "embedding": [0.5] * dims} for i, _ in enumerate(inputs)
                        ],
                        "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
                    },
                )
                return
            words = script.reply.split(" ")
            completion_tokens = len(words)
            if not body.get("stream"):
                self._json(
                    200,
                    {
                        "id": "chatcmpl-sim",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": script.reply},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": script.prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": script.prompt_tokens + completion_tokens,
                        },
                    },
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for i, word in enumerate(words):
                if script.cut_after is not None and i >= script.cut_after:
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if script.malformed and i == 1:
                    self.wfile.write(b"data: {not json\n\n")
                    self.wfile.flush()
                    return
                text = word if i == 0 else " " + word
                chunk = {
                    "id": "chatcmpl-sim",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            final = {
                "id": "chatcmpl-sim",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            usage = {
                "id": "chatcmpl-sim",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [],
                "usage": {
                    "prompt_tokens": script.prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": script.prompt_tokens + completion_tokens,
                },
            }
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def simulated_upstream(script: Script | None = None) -> Iterator[tuple[str, Script]]:
    """Yield (base_url ending in /v1, script) for a server that runs until the block ends."""
    script = script or Script()
    with serving(_handler(script), "/v1") as url:
        yield url, script
