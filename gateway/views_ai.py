"""`/v1/ai/*` views: parse, call the flow in gateway/chat.py (and friends), format the answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse

from gateway import chat, idempotency
from gateway.api import ApiRequestState, Caller, api_view_async, parse_json_body
from gateway.chat import ChatOutcome, StreamEvent
from gateway.models import IdempotencyRecord
from gateway.vendors.base import Usage
from infrai.lib.sync import finish_even_if_cancelled, in_thread


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


def usage_json(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def streaming_response(events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def claim_idempotency(
    request: HttpRequest, caller: Caller, scope: str, body: dict[str, Any], request_id: str = ""
) -> IdempotencyRecord | dict[str, Any] | None:
    """Claim the call's idempotency key (explicit, or derived from a client request id)."""
    key = idempotency.explicit_key(request, body, required=False)
    if key is None:
        client_request_id = request.headers.get("X-Client-Request-Id") or body.get("request_id")
        if not client_request_id:
            return None  # a fresh request id would derive a key nothing can ever repeat
        key = idempotency.derived_key(caller.account, str(client_request_id), scope, body)
    return await in_thread(idempotency.claim, caller.account, scope, key, body, request_id)


def chat_json(outcome: ChatOutcome) -> dict[str, Any]:
    body: dict[str, Any] = {
        "content": outcome.result.content,
        "finish_reason": outcome.result.finish_reason,
        "model": outcome.candidate.model_name,
        "usage": usage_json(outcome.result.usage),
        "_metadata": outcome.metadata,
    }
    if outcome.result.tool_calls:
        body["tool_calls"] = outcome.result.tool_calls
    return body


def replayed(stored: dict[str, Any], state: ApiRequestState) -> dict[str, Any]:
    body = dict(stored)
    body["_metadata"] = {
        **stored.get("_metadata", {}),
        "replayed": True,
        "cost_usd": "0.00",
        "original_request_id": stored.get("_metadata", {}).get("request_id"),
        "request_id": state.request_id,
    }
    return body


async def run_idempotent(
    request: HttpRequest, state: ApiRequestState, scope: str, body: dict[str, Any], produce: Any
) -> dict[str, Any]:
    caller = state.caller
    assert caller is not None
    claim = await claim_idempotency(request, caller, scope, body, state.request_id)
    if isinstance(claim, dict):
        return replayed(claim, state)
    try:
        result = await produce()
    except BaseException:
        if claim is not None:
            await in_thread(idempotency.abandon, claim)
        raise
    if claim is not None:
        await in_thread(idempotency.complete, claim, 200, result)
    return result


def ai_stream_events(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    async def generate() -> AsyncIterator[bytes]:
        async for event in events:
            if event.kind == "delta":
                yield sse({"delta": event.text, "finish_reason": None, "index": 0})
            elif event.kind == "error":
                yield sse({"error": event.error})
            else:
                assert event.usage is not None
                yield sse(
                    {
                        "delta": "",
                        "finish_reason": event.finish_reason,
                        "index": 0,
                        "usage": usage_json(event.usage),
                        "_metadata": event.metadata,
                    }
                )
        yield sse("[DONE]")

    return generate()


async def idempotent_stream(
    request: HttpRequest, state: ApiRequestState, scope: str, body: dict[str, Any], params: chat.ChatParams
) -> AsyncIterator[StreamEvent]:
    """A chat stream under the idempotency rules: a replay streams the stored reply at no cost;
    a first call stores its reply once the final event is out; a stream that breaks stores nothing."""
    caller = state.caller
    assert caller is not None
    claim = await claim_idempotency(request, caller, scope, body, state.request_id)
    if isinstance(claim, dict):
        return _replayed_events(claim, state)
    try:
        events = await chat.open_stream(request, caller, state, params)
    except BaseException:
        if claim is not None:
            await in_thread(idempotency.abandon, claim)
        raise
    return events if claim is None else _recorded_events(events, claim)


async def _replayed_events(stored: dict[str, Any], state: ApiRequestState) -> AsyncIterator[StreamEvent]:
    usage = stored["usage"]
    yield StreamEvent("delta", text=stored["content"], model=stored["model"])
    yield StreamEvent(
        "final",
        finish_reason=stored["finish_reason"],
        usage=Usage(usage["prompt_tokens"], usage["completion_tokens"]),
        metadata=replayed(stored, state)["_metadata"],
        model=stored["model"],
    )


async def _recorded_events(events: AsyncIterator[StreamEvent], claim: IdempotencyRecord) -> AsyncIterator[StreamEvent]:
    text: list[str] = []
    stored = False
    try:
        async for event in events:
            if event.kind == "delta":
                text.append(event.text)
            elif event.kind == "final" and event.usage is not None:
                result = {
                    "content": "".join(text),
                    "finish_reason": event.finish_reason,
                    "model": event.model,
                    "usage": usage_json(event.usage),
                    "_metadata": event.metadata,
                }
                await in_thread(idempotency.complete, claim, 200, result)
                stored = True
            yield event
    finally:
        if not stored:
            await finish_even_if_cancelled(in_thread(idempotency.abandon, claim))


@api_view_async(["POST"])
async def ai_chat(request: HttpRequest, state: ApiRequestState) -> Any:
    caller = state.caller
    assert caller is not None
    body = parse_json_body(request)
    params = chat.parse_chat_params(body, request)
    if params.stream:
        events = await idempotent_stream(request, state, "ai.chat.stream", body, params)
        return streaming_response(ai_stream_events(events))

    async def produce() -> dict[str, Any]:
        return chat_json(await chat.run_chat(request, caller, state, params))

    return await run_idempotent(request, state, "ai.chat", body, produce)
