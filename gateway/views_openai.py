"""OpenAI-shaped routes, so the official `openai` SDK works with base_url=<host>/v1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from gateway import chat
from gateway.api import ApiRequestState, api_view_async, parse_json_body
from gateway.chat import ChatOutcome, StreamEvent
from gateway.models import CatalogModel
from gateway.views_ai import idempotent_stream, run_idempotent, sse, streaming_response, usage_json


def completion_json(outcome: ChatOutcome, state: ApiRequestState) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": outcome.result.content}
    if outcome.result.tool_calls:
        message["tool_calls"] = outcome.result.tool_calls
    return {
        "id": f"chatcmpl-{state.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": outcome.candidate.model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": outcome.result.finish_reason, "logprobs": None}],
        "usage": usage_json(outcome.result.usage),
        "_metadata": outcome.metadata,
    }


def completion_chunks(
    events: AsyncIterator[StreamEvent], state: ApiRequestState, include_usage: bool
) -> AsyncIterator[bytes]:
    created = int(time.time())
    chunk_id = f"chatcmpl-{state.request_id}"

    def chunk(model: str, delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        return sse(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                **extra,
            }
        )

    async def generate() -> AsyncIterator[bytes]:
        first = True
        async for event in events:
            if event.kind == "delta":
                delta = {"role": "assistant", "content": event.text} if first else {"content": event.text}
                first = False
                yield chunk(event.model, delta, None)
            elif event.kind == "error":
                yield sse({"error": event.error})
            else:
                assert event.usage is not None
                yield chunk(event.model, {}, event.finish_reason, _metadata=event.metadata)
                if include_usage:
                    yield sse(
                        {
                            "id": chunk_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": event.model,
                            "choices": [],
                            "usage": usage_json(event.usage),
                            "_metadata": event.metadata,
                        }
                    )
        yield sse("[DONE]")

    return generate()


@api_view_async(["POST"])
async def chat_completions(request: HttpRequest, state: ApiRequestState) -> Any:
    caller = state.caller
    assert caller is not None
    body = parse_json_body(request)
    params = chat.parse_chat_params(body, request, openai_shape=True)
    if params.stream:
        events = await idempotent_stream(request, state, "chat.completions.stream", body, params)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return streaming_response(completion_chunks(events, state, include_usage))

    async def produce() -> dict[str, Any]:
        return completion_json(await chat.run_chat(request, caller, state, params), state)

    return await run_idempotent(request, state, "chat.completions", body, produce)


def _models() -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entry in CatalogModel.objects.filter(enabled=True):
        seen.setdefault(
            entry.model_id,
            {"id": entry.model_id, "object": "model", "created": 0, "owned_by": entry.vendor, "capabilities": []},
        )["capabilities"].append(entry.capability)
    return list(seen.values())


@api_view_async(["GET"])
async def list_models(request: HttpRequest, state: ApiRequestState) -> Any:
    return {"object": "list", "data": await sync_to_async(_models)()}
