"""A SIMULATED Cohere upstream for tests: a real HTTP server on loopback speaking Cohere's v2
rerank wire format (`POST /v2/rerank` -> `{id, results: [{index, relevance_score}], meta:
{billed_units: {search_units}}}`; errors `{id, message}`), with scripted statuses. Nothing here
is Cohere: scores come from word overlap with the query."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.loopback import JsonHandler, serving


@dataclass
class Script:
    status: int = 200
    message: str | None = None  # the error message for a non-200 status
    delay: float = 0.0
    omit_billed_units: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)


def overlap_score(query: str, document: str) -> float:
    """A deterministic stand-in for relevance: the share of query words in the document."""
    words = {w.strip(".,?!").lower() for w in query.split()}
    found = {w.strip(".,?!").lower() for w in document.split()}
    return round(len(words & found) / max(1, len(words)), 6)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _error(self, status: int, message: str) -> None:
            self._json(status, {"id": "sim-error-id", "message": message})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            script.requests.append(
                {"path": self.path, "body": body, "authorization": self.headers.get("Authorization", "")}
            )
            try:
                self._answer(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802
            script.requests.append(
                {"path": self.path, "body": None, "authorization": self.headers.get("Authorization", "")}
            )
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                self._error(401, "no api key supplied")
            elif script.status != 200:
                self._error(script.status, script.message or f"simulated Cohere {script.status}")
            elif self.path.split("?")[0] == "/v1/models":
                self._json(200, {"models": [{"name": "rerank-v3.5", "endpoints": ["rerank"]}], "next_page_token": None})
            else:
                self._error(404, f"route {self.path} not found")

        def _answer(self, body: dict[str, Any]) -> None:
            if script.delay:
                time.sleep(script.delay)
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                self._error(401, "no api key supplied")
                return
            if script.status != 200:
                self._error(script.status, script.message or f"simulated Cohere {script.status}")
                return
            if self.path != "/v2/rerank":
                self._error(404, f"route {self.path} not found")
                return
            query, documents = body.get("query"), body.get("documents")
            if not body.get("model"):
                self._error(400, "invalid request: model is required")
                return
            if not isinstance(query, str) or not query or not isinstance(documents, list) or not documents:
                self._error(400, "invalid request: query and a non-empty list of documents are required")
                return
            results = sorted(
                ({"index": i, "relevance_score": overlap_score(query, str(d))} for i, d in enumerate(documents)),
                key=lambda r: (-r["relevance_score"], r["index"]),
            )
            if body.get("top_n"):
                results = results[: body["top_n"]]
            reply: dict[str, Any] = {
                "id": "sim-rerank-id",
                "results": results,
                "meta": {"api_version": {"version": "2"}},
            }
            if not script.omit_billed_units:
                reply["meta"]["billed_units"] = {"search_units": max(1, -(-len(documents) // 100))}
            self._json(200, reply)

    return Handler


@contextmanager
def simulated_cohere(script: Script | None = None) -> Iterator[tuple[str, Script]]:
    """Yield (base_url, script) for a server that runs until the block ends."""
    script = script or Script()
    with serving(_handler(script), "") as url:
        yield url, script
