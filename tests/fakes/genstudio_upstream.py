"""A SIMULATED GenStudio (Infini-AI) upstream for tests: a real HTTP server on loopback.

It speaks the wire format gateway/vendors/genstudio.py assumes (see that module's docstring: the
seed gives routes, not bodies): OpenAI Chat Completions JSON and SSE on the default, chip and
deployment routes, embeddings, rerank, and the SD task API (create, then get_result pending
for a few polls, then done), with scripted error statuses and bodies. Nothing here is GenStudio.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.loopback import JsonHandler, serving

CHAT_ROUTE = re.compile(r"^/maas/(?:v1|deployment/mif-[A-Za-z0-9]+|[A-Za-z0-9._-]+/[A-Za-z0-9._-]+)/chat/completions$")
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass
class Script:
    status: int = 200  # every request answers with this status when it is not 200
    error_body: dict[str, Any] | None = None  # the body of that error; GenStudio's shape by default
    reply: str = "Hello from the simulated GenStudio."
    prompt_tokens: int = 13
    delay: float = 0.0  # seconds before answering
    cut_after: int | None = None  # stream: hang up after N chunks
    error_after: int | None = None  # stream: send an error event after N chunks
    error_event_code: int = 500
    stall_after: int | None = None  # stream: go silent for `delay` seconds after N chunks
    malformed: bool = False  # stream: send a broken event after the first chunk
    rerank_scores: list[float] | None = None  # score per document; default decreases with length
    rerank_ignores_top_n: bool = False
    task_pending_polls: int = 2  # get_result says pending this many times, then done
    task_outcome: str = "success"  # or "failed"
    task_images_b64: bool = False  # done images as base64 objects instead of URLs
    task_status_after_create: int = 200  # get_result answers with this status (e.g. 500)
    hung_up: bool = False  # set when the client went away while the server was still writing
    requests: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> {body, polls}
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _maas_error(self, status: int, message: str, code: str) -> None:
            self._json(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with script.lock:
                script.requests.append(
                    {"path": self.path, "body": body, "authorization": self.headers.get("Authorization", "")}
                )
            try:
                self._answer(body)
            except (BrokenPipeError, ConnectionResetError):
                script.hung_up = True
                self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802
            with script.lock:
                script.requests.append(
                    {"path": self.path, "body": None, "authorization": self.headers.get("Authorization", "")}
                )
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                self._maas_error(401, "missing bearer token", "invalid_api_key")
            elif script.status != 200:
                self._json(
                    script.status, script.error_body or {"error": {"message": f"simulated GenStudio {script.status}"}}
                )
            elif self.path == "/maas/v1/models":
                self._json(200, {"object": "list", "data": [{"id": "megrez-7b-instruct", "object": "model"}]})
            else:
                self._maas_error(404, f"no route {self.path}", "not_found")

        def _answer(self, body: dict[str, Any]) -> None:
            if script.delay and script.stall_after is None:
                time.sleep(script.delay)
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                self._maas_error(401, "missing bearer token", "invalid_api_key")
                return
            if script.status != 200:
                self._json(
                    script.status,
                    script.error_body
                    or {
                        "error": {
                            "message": f"simulated GenStudio {script.status}",
                            "type": "server_error" if script.status >= 500 else "invalid_request_error",
                            "code": str(script.status),
                        }
                    },
                )
                return
            if CHAT_ROUTE.match(self.path):
                self._chat(body)
            elif self.path == "/maas/v1/embeddings":
                self._embeddings(body)
            elif self.path == "/maas/v1/rerank":
                self._rerank(body)
            elif self.path == "/api/maas/sd_task_api/create":
                self._task_create(body)
            elif self.path == "/api/maas/sd_task_api/get_result":
                self._task_result(body)
            else:
                self._maas_error(404, f"no route {self.path}", "not_found")

        # --- Chat ------------------------------------------------------------------------

        def _chat(self, body: dict[str, Any]) -> None:
            if not body.get("messages"):
                self._maas_error(400, "messages is required", "invalid_parameter")
                return
            words = script.reply.split(" ")
            usage = {
                "prompt_tokens": script.prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": script.prompt_tokens + len(words),
            }
            if not body.get("stream"):
                self._json(
                    200,
                    {
                        "id": "chatcmpl-genstudio-sim",
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
                        "usage": usage,
                    },
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def send(event: dict[str, Any] | str) -> None:
                payload = event if isinstance(event, str) else json.dumps(event)
                self.wfile.write(f"data: {payload}\n\n".encode())
                self.wfile.flush()

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {
                    "id": "chatcmpl-genstudio-sim",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }

            for i, word in enumerate(words):
                if script.cut_after is not None and i >= script.cut_after:
                    return
                if script.error_after is not None and i >= script.error_after:
                    send(
                        {
                            "error": {
                                "message": "simulated inference failure",
                                "type": "server_error",
                                "code": script.error_event_code,
                            }
                        }
                    )
                    return
                if script.stall_after is not None and i == script.stall_after:
                    time.sleep(script.delay)
                if script.malformed and i == 1:
                    send("{not json")
                    return
                send(chunk({"role": "assistant", "content": word} if i == 0 else {"content": " " + word}))
            send(chunk({}, "stop"))
            send({"id": "chatcmpl-genstudio-sim", "object": "chat.completion.chunk", "choices": [], "usage": usage})
            send("[DONE]")

        # --- Embeddings and rerank -------------------------------------------------------

        def _embeddings(self, body: dict[str, Any]) -> None:
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            dims = body.get("dimensions") or 4
            self._json(
                200,
                {
                    "object": "list",
                    "model": body["model"],
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [round(0.1 * (i + 1), 3)] * dims}
                        for i in reversed(range(len(inputs)))  # out of order, as the index says
                    ],
                    "usage": {"prompt_tokens": 5 * len(inputs), "total_tokens": 5 * len(inputs)},
                },
            )

        def _rerank(self, body: dict[str, Any]) -> None:
            documents = body.get("documents")
            if not body.get("query") or not isinstance(documents, list) or not documents:
                self._maas_error(400, "query and documents are required", "invalid_parameter")
                return
            scores = script.rerank_scores or [1.0 / (1 + len(str(d))) for d in documents]
            results = sorted(
                ({"index": i, "relevance_score": s, "document": {"text": documents[i]}} for i, s in enumerate(scores)),
                key=lambda r: -r["relevance_score"],
            )
            if body.get("top_n") and not script.rerank_ignores_top_n:
                results = results[: body["top_n"]]
            tokens = len(str(body["query"]).split()) + sum(len(str(d).split()) for d in documents)
            self._json(200, {"model": body["model"], "results": results, "usage": {"total_tokens": tokens}})

        # --- SD task API -----------------------------------------------------------------

        def _task_create(self, body: dict[str, Any]) -> None:
            if not body.get("prompt"):
                self._json(200, {"code": 40001, "msg": "prompt is required", "data": None})
                return
            with script.lock:
                task_id = f"sdtask-{len(script.tasks) + 1}"
                script.tasks[task_id] = {"body": body, "polls": 0}
            self._json(200, {"code": 0, "msg": "success", "data": {"task_id": task_id}})

        def _task_result(self, body: dict[str, Any]) -> None:
            task_id = body.get("task_id")
            if script.task_status_after_create != 200:
                self._json(
                    script.task_status_after_create,
                    {"code": script.task_status_after_create, "msg": "simulated task service failure"},
                )
                return
            with script.lock:
                task = script.tasks.get(str(task_id))
                if task is not None:
                    task["polls"] += 1
            if task is None:
                self._json(200, {"code": 40400, "msg": f"task {task_id} not found", "data": None})
                return
            if task["polls"] <= script.task_pending_polls:
                self._json(200, {"code": 0, "msg": "success", "data": {"task_id": task_id, "status": "pending"}})
                return
            if script.task_outcome == "failed":
                data = {"task_id": task_id, "status": "failed", "error": "prompt rejected by content review"}
            else:
                n = int(task["body"].get("n") or 1)
                images: list[Any] = (
                    [{"b64_json": base64.b64encode(PNG_1X1).decode()} for _ in range(n)]
                    if script.task_images_b64
                    else [f"https://genstudio.invalid/sd/{task_id}/{i}.png" for i in range(n)]
                )
                data = {"task_id": task_id, "status": "success", "images": images}
            self._json(200, {"code": 0, "msg": "success", "data": data})

    return Handler


@contextmanager
def simulated_genstudio(script: Script | None = None) -> Iterator[tuple[str, Script]]:
    """Yield (base_url, script) for a server that runs until the block ends; the base URL is the
    host, like https://cloud.infini-ai.com."""
    script = script or Script()
    with serving(_handler(script), "") as url:
        yield url, script
