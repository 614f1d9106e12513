"""A playground websocket session: chat and compare runs that stream token by token and stop.

The client sends
  {"type": "chat", "run": ID, "messages": [...], "system"?, "model"? | "task"?/"prefer"?,
   "temperature"?, "max_tokens"?}
  {"type": "compare", "run": ID, "models": [2 to 4 ids], ...the same fields}
  {"type": "stop", "run"?: ID}
and receives, per lane (0 for chat, the model's column for compare):
  start {run, lane, model, request_id, code} · delta {run, lane, text}* ·
  final {run, lane, finish_reason, model, usage, cost_usd, latency_ms, vendor, request_id} |
  error {run, lane, error: {code, message, field?, ...402 facts, topup_url}}

Each lane is one asyncio task iterating `gateway.chat.open_stream`: Stop cancels the task, and
the flow settles what was delivered before the "cancelled" final goes out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from gateway import chat
from gateway.api import ApiError, ApiRequestState, Caller, field_error
from playground import runs, snippets

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_COMPARE = 4
MAX_LANES = 8  # running at once on one socket
MAX_RUN_ID = 64
CHAT_FIELDS = ("model", "task", "prefer", "temperature", "max_tokens")


@dataclass
class Lane:
    run: str
    index: int
    task: asyncio.Task[None] | None = None
    stopping: bool = False

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def cancel(self) -> None:
        # Once only: a second cancel would interrupt the shielded settlement the first one started.
        if self.running() and not self.stopping:
            self.stopping = True
            assert self.task is not None
            self.task.cancel()


def chat_body(message: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The `/v1` body a playground message stands for (also what "View code" shows)."""
    history = message.get("messages")
    if not isinstance(history, list):
        raise field_error("messages", "messages must be the list of turns so far.", code="MISSING_FIELD")
    system = message.get("system")
    if system is not None and not isinstance(system, str):
        raise field_error("system", "system must be text.")
    messages = ([{"role": "system", "content": system}] if system and system.strip() else []) + history
    body: dict[str, Any] = {}
    for name in CHAT_FIELDS:
        value = message.get(name)
        if value not in (None, ""):
            body[name] = value
    if model is not None:
        body["model"] = model
    if body.get("model"):
        body.pop("task", None)
        body.pop("prefer", None)
    body["messages"] = messages
    body["stream"] = True
    return body


class PlaygroundSession:
    def __init__(self, caller: Caller, base_url: str, send: Send) -> None:
        self.caller = caller
        self.base_url = base_url
        self._send = send
        self.lanes: list[Lane] = []
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        if not self.closed:
            await self._send(message)

    async def handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            await self.send({"type": "error", "error": {"code": "INVALID_JSON", "message": "Send a JSON object."}})
            return
        run = message.get("run")
        kind = message.get("type")
        page = "compare" if kind == "compare" else "chat"
        try:
            if kind == "stop":
                self.stop(run if isinstance(run, str) else None)
                return
            if not isinstance(run, str) or not 1 <= len(run) <= MAX_RUN_ID:
                raise field_error("run", f"run must be an id of 1 to {MAX_RUN_ID} characters.")
            if kind == "chat":
                await self.start(run, "chat", [chat_body(message)])
            elif kind == "compare":
                models = message.get("models")
                if (
                    not isinstance(models, list)
                    or not 2 <= len(models) <= MAX_COMPARE
                    or not all(isinstance(m, str) and m for m in models)
                ):
                    raise field_error("models", f"Choose 2 to {MAX_COMPARE} models to compare.")
                if len(set(models)) != len(models):
                    raise field_error("models", "Choose different models to compare.")
                await self.start(run, "compare", [chat_body(message, model) for model in models])
            else:
                raise field_error("type", "type must be chat, compare or stop.")
        except ApiError as exc:
            await self.send({"type": "error", "run": run, "lane": None, "error": runs.error_payload(exc, page)})

    async def start(self, run: str, page: str, bodies: list[dict[str, Any]]) -> None:
        self.lanes = [lane for lane in self.lanes if lane.running()]
        busy = len(self.lanes)
        if busy + len(bodies) > MAX_LANES:
            raise ApiError(429, "TOO_MANY_RUNS", "Stop or wait for a reply before starting another.", field="run")
        # Validate every lane before any starts, so a bad field stops the whole run up front.
        params = [chat.parse_chat_params(body, None) for body in bodies]
        for index, (body, lane_params) in enumerate(zip(bodies, params, strict=True)):
            lane = Lane(run, index)
            lane.task = asyncio.create_task(self._lane(lane, page, body, lane_params))
            self.lanes.append(lane)

    def stop(self, run: str | None) -> None:
        for lane in self.lanes:
            if run is None or lane.run == run:
                lane.cancel()

    async def close(self) -> None:
        """The socket went away: stop every lane and wait until each has settled its hold."""
        self.closed = True
        tasks = [lane.task for lane in self.lanes if lane.task is not None and lane.running()]
        for lane in self.lanes:
            lane.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _lane(self, lane: Lane, page: str, body: dict[str, Any], params: chat.ChatParams) -> None:
        state = runs.new_state(self.caller)
        head = {"run": lane.run, "lane": lane.index}
        await self.send(
            {
                "type": "start",
                **head,
                "model": params.model or "",
                "request_id": state.request_id,
                "code": snippets.chat(self.base_url, body),
            }
        )
        finished = False
        try:
            stream = await self._open(state, params)
            async for event in stream:
                if event.kind == "delta":
                    await self.send({"type": "delta", **head, "text": event.text})
                elif event.kind == "error":
                    await self.send({"type": "error", **head, "error": {"status": 502, **(event.error or {})}})
                else:
                    usage = event.usage
                    assert usage is not None and event.metadata is not None
                    finished = True
                    await self.send(
                        {
                            "type": "final",
                            **head,
                            "finish_reason": event.finish_reason,
                            "model": event.model,
                            "usage": {
                                "prompt_tokens": usage.input_tokens,
                                "completion_tokens": usage.output_tokens,
                                "total_tokens": usage.input_tokens + usage.output_tokens,
                            },
                            **event.metadata,
                        }
                    )
        except ApiError as exc:
            await self.send({"type": "error", **head, "error": runs.error_payload(exc, page)})
            return
        except asyncio.CancelledError:
            # The stream's own cleanup has settled what was delivered by now.
            await self._report_settled(head, state.request_id, "cancelled")
            raise
        except Exception:
            log.exception("playground lane %s failed", state.request_id)
            await self.send(
                {"type": "error", **head, "error": {"status": 500, "code": "INTERNAL", "message": "Something broke."}}
            )
            return
        if not finished:  # cut or failed upstream: say what it cost
            await self._report_settled(head, state.request_id, "error")

    async def _open(self, state: ApiRequestState, params: chat.ChatParams) -> AsyncIterator[chat.StreamEvent]:
        """Route and hold. A Stop meanwhile waits for the hold, then gives it back: a stream
        that never starts would never settle it, leaving it to the hold sweeper."""
        opening = asyncio.ensure_future(chat.open_stream(self.base_url, self.caller, state, params))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait({opening})
            if not opening.cancelled() and opening.exception() is None:
                await sync_to_async(runs.release_unstarted)(state.request_id)
            raise

    async def _report_settled(self, head: dict[str, Any], request_id: str, finish_reason: str) -> None:
        if self.closed:
            return
        record = await runs.usage_record(request_id)
        summary = runs.usage_summary(record, request_id)
        await self.send(
            {
                "type": "final",
                **head,
                "finish_reason": finish_reason,
                "model": record.model if record else "",
                **summary,
            }
        )


async def caller_for_scope(scope: dict[str, Any]) -> Caller | None:
    user = scope.get("user")
    if not getattr(user, "is_authenticated", False):
        return None
    return await sync_to_async(runs.caller_for)(user, scope.get("session"))  # type: ignore[arg-type]


def base_url_for_scope(scope: dict[str, Any]) -> str:
    from django.conf import settings

    if settings.SITE_URL:
        return settings.SITE_URL
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"localhost").decode("latin-1")
    secure = scope.get("scheme") in ("wss", "https")
    return f"{'https' if secure else 'http'}://{host}"
