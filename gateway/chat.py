"""ai.chat and /v1/chat/completions: validation, routing with failover, holds, cache, streaming.

One flow serves both shapes: `ChatParams` is parsed from either body, `run_chat` answers a
plain call and `stream_chat` yields events; the views only format them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from billing.models import Hold
from console.models import Account
from gateway import catalog, metering, routing
from gateway.api import ApiError, ApiRequestState, Caller, field_error
from gateway.inputs import whole_number
from gateway.routing import Candidate
from gateway.sandbox import tokens
from gateway.vendors.base import ChatRequest, ChatResult, Usage, VendorError
from infrai.lib.money import format_usd
from infrai.lib.redact import redact_secret
from infrai.lib.sync import finish_even_if_cancelled, in_thread

log = logging.getLogger(__name__)
CACHE_STRATEGIES = ("vendor", "infrai", "none")
ROLES = ("system", "user", "assistant", "tool", "developer")


def scrubbed(error: VendorError, candidate: Candidate) -> VendorError:
    """The vendor's error without the caller's key in it (an upstream may echo it back)."""
    error.message = redact_secret(error.message, candidate.credential.api_key)
    return error


@dataclass
class ChatParams:
    messages: list[dict[str, Any]]
    model: str | None = None
    vendor: str | None = None
    task: str | None = None
    prefer: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    cache_strategy: str = "vendor"
    batch_mode: bool = False
    max_cost_multiplier: float = 1.5
    stream: bool = False
    sandbox_fail: str | None = None
    cache_material: dict[str, Any] = field(default_factory=dict)


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        if not value.strip():
            raise field_error("messages", "messages must not be empty.")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise field_error("messages", "messages is required: a string or a non-empty list of {role, content}.")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise field_error(f"messages[{i}]", "each message must be an object with role and content.")
        if message.get("role") not in ROLES:
            raise field_error(f"messages[{i}].role", f"role must be one of {', '.join(ROLES)}.")
        content = message.get("content")
        if content is None and not message.get("tool_calls"):
            raise field_error(f"messages[{i}].content", "content is required.")
        if content is not None and not isinstance(content, (str, list)):
            raise field_error(f"messages[{i}].content", "content must be a string or a list of parts.")
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise field_error(name, f"{name} must be a number from {low:g} to {high:g}.")
    return float(value)


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise field_error(name, f"{name} must be a non-empty string.")
    return value


def parse_chat_params(body: dict[str, Any], request: HttpRequest | None, *, openai_shape: bool = False) -> ChatParams:
    if "messages" not in body:
        raise field_error("messages", "messages is required.", code="MISSING_FIELD")
    params = ChatParams(messages=_messages(body["messages"]))
    params.model = _optional_str(body, "model")
    params.vendor = _optional_str(body, "vendor")
    params.task = _optional_str(body, "task")
    params.prefer = _optional_str(body, "prefer")
    params.temperature = _number(body, "temperature", 0, 2)
    limit_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    raw_limit = body.get(limit_name)
    max_tokens = whole_number(raw_limit) if raw_limit is not None else None
    if raw_limit is not None and (max_tokens is None or max_tokens < 1):
        raise field_error(limit_name, f"{limit_name} must be a positive integer.")
    params.max_tokens = max_tokens
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise field_error("tools", "tools must be a list of tool objects.")
    params.tools = tools or None
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict) or response_format.get("type") not in (
            "text",
            "json_object",
            "json_schema",
        ):
            raise field_error("response_format", "response_format must be {type: text | json_object | json_schema}.")
        params.response_format = response_format
    cache_strategy = body.get("cache_strategy", "vendor")
    if cache_strategy not in CACHE_STRATEGIES:
        raise field_error("cache_strategy", f"cache_strategy must be one of {', '.join(CACHE_STRATEGIES)}.")
    params.cache_strategy = cache_strategy
    for flag in ("batch_mode", "stream"):
        value = body.get(flag, False)
        if not isinstance(value, bool):
            raise field_error(flag, f"{flag} must be true or false.")
        setattr(params, flag, value)
    multiplier = _number(body, "max_cost_multiplier", 1, 100)
    params.max_cost_multiplier = 1.5 if multiplier is None else multiplier
    params.sandbox_fail = request.headers.get("X-Sandbox-Fail") if request is not None else None
    params.cache_material = {
        k: v
        for k, v in body.items()
        if k not in ("idempotency_key", "stream", "stream_options", "cache_strategy", "request_id")
    }
    return params


# --- Costing ----------------------------------------------------------------------------------


def prompt_tokens_of(params: ChatParams) -> int:
    return tokens.count_messages(params.messages, tools=params.tools)


def worst_case_nano(candidate: Candidate, prompt_tokens: int, params: ChatParams) -> int:
    limit = catalog.output_limit(candidate.entry)
    output = min(params.max_tokens, limit) if params.max_tokens else limit
    return catalog.token_cost_nano(candidate.entry, prompt_tokens, output, batch_mode=params.batch_mode)


def actual_cost_nano(candidate: Candidate, usage: Usage, params: ChatParams) -> int:
    """What the caller is charged for `usage` (the catalog price, or the BYOK fee)."""
    cached = usage.cached_input_tokens if params.cache_strategy == "vendor" else 0
    cost = catalog.token_cost_nano(candidate.entry, usage.input_tokens, usage.output_tokens, cached, params.batch_mode)
    return catalog.charged_nano(candidate.credential.byok, cost)


def worst_case_charge_nano(candidate: Candidate, prompt_tokens: int, params: ChatParams) -> int:
    return catalog.charged_nano(candidate.credential.byok, worst_case_nano(candidate, prompt_tokens, params))


@dataclass
class Plan:
    chain: list[Candidate]
    prompt_tokens: int
    hold_nano: int


def plan(caller: Caller, params: ChatParams) -> Plan:
    return plan_for_account(caller.account, params)


def plan_for_account(account: Account, params: ChatParams) -> Plan:
    """The primary candidate, the failover candidates within the cost cap, and the hold to take."""
    found = routing.candidates(
        account, "chat", model=params.model, vendor=params.vendor, task=params.task, prefer=params.prefer
    )
    prompt_tokens = prompt_tokens_of(params)
    primary = found[0]
    limit = catalog.output_limit(primary.entry)
    if params.max_tokens and params.max_tokens > limit:
        raise field_error("max_tokens", f"max_tokens may be at most {limit} for {primary.entry.model_id}.")
    if primary.entry.context_tokens and prompt_tokens > primary.entry.context_tokens:
        raise field_error(
            "messages",
            f"The prompt has {prompt_tokens} tokens; {primary.entry.model_id} takes at most {primary.entry.context_tokens}.",
        )
    primary_cost = worst_case_nano(primary, prompt_tokens, params)
    cap = int(primary_cost * params.max_cost_multiplier)
    chain = [primary] + [c for c in found[1:] if worst_case_nano(c, prompt_tokens, params) <= cap]
    # The failover cap compares catalog prices; the hold is what the caller could be charged.
    hold = max(worst_case_charge_nano(c, prompt_tokens, params) for c in chain)
    return Plan(chain=chain, prompt_tokens=prompt_tokens, hold_nano=hold)


# Prompts longer than this are counted in a thread: tokenising them would hold up the event loop.
PLAN_ON_LOOP_MAX_CHARS = 20_000


def _prompt_chars(params: ChatParams) -> int:
    return sum(len(m["content"]) if isinstance(m.get("content"), str) else 1_000 for m in params.messages)


async def plan_async(account: Account, params: ChatParams, routing_version: str | None = None) -> Plan:
    """`plan_for_account` on the event loop from this process's copies of the routing data; in a
    thread when it must read the database (a cold copy, a BYOK credential) or the prompt is long."""
    if _prompt_chars(params) <= PLAN_ON_LOOP_MAX_CHARS:
        try:
            with catalog.cached_only(routing_version):
                return plan_for_account(account, params)
        except catalog.NotCached:
            pass
    return await in_thread(plan_for_account, account, params)


async def take_hold(
    origin: metering.Origin, caller: Caller, state: ApiRequestState, the_plan: Plan, params: ChatParams
) -> Hold:
    """Hold enough for failover too; if only the primary is affordable, go without failover."""
    try:
        return await metering.hold_or_402(origin, caller, state.request_id, the_plan.hold_nano, "chat")
    except ApiError:
        primary_only = worst_case_charge_nano(the_plan.chain[0], the_plan.prompt_tokens, params)
        if len(the_plan.chain) == 1 or primary_only == the_plan.hold_nano:
            raise
        the_plan.chain = the_plan.chain[:1]
        the_plan.hold_nano = primary_only
        return await metering.hold_or_402(origin, caller, state.request_id, primary_only, "chat")


async def plan_and_hold(
    origin: metering.Origin, caller: Caller, state: ApiRequestState, params: ChatParams
) -> tuple[Plan, Hold]:
    the_plan = await plan_async(caller.account, params, state.routing_version)
    return the_plan, await take_hold(origin, caller, state, the_plan, params)


def chat_request(candidate: Candidate, params: ChatParams) -> ChatRequest:
    return ChatRequest(
        model=candidate.model_name,
        messages=params.messages,
        temperature=params.temperature,
        max_tokens=params.max_tokens,
        tools=params.tools,
        response_format=params.response_format,
        extra={"sandbox_fail": params.sandbox_fail} if params.sandbox_fail else {},
    )


def cache_key(caller: Caller, params: ChatParams) -> str:
    material = json.dumps(params.cache_material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"chat-cache:{caller.account.public_id}:{hashlib.sha256(material.encode()).hexdigest()}"


def meta(
    state: ApiRequestState, candidate: Candidate | None, cost_nano: int, cache_hit: bool = False
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cost_usd": format_usd(cost_nano),
        "latency_ms": int((time.perf_counter() - state.started) * 1000),
        "vendor": candidate.entry.vendor if candidate else "infrai",
        "cache_hit": cache_hit,
        "request_id": state.request_id,
    }
    if candidate and candidate.credential.byok:
        data["byok"] = True
    return data


@dataclass
class ChatOutcome:
    result: ChatResult
    candidate: Candidate
    cost_nano: int
    metadata: dict[str, Any]


def _facts(
    candidate: Candidate, usage: Usage, state: ApiRequestState, status: str = "ok", cache_hit: bool = False
) -> metering.UsageFacts:
    return metering.UsageFacts(
        capability="chat",
        model=candidate.entry.model_id,
        vendor=candidate.entry.vendor,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        latency_ms=int((time.perf_counter() - state.started) * 1000),
        cache_hit=cache_hit,
        byok=candidate.credential.byok,
        status=status,
    )


def measured_usage(usage: Usage, the_plan: Plan, text: str) -> Usage:
    """The vendor's usage, or our own count when it reported none."""
    if usage.input_tokens or usage.output_tokens:
        return usage
    return Usage(input_tokens=the_plan.prompt_tokens, output_tokens=tokens.count_text(text) if text else 0)


async def _cache_get(key: str) -> dict[str, Any] | None:
    """The response cache is an optimisation: with the cache (Redis) down, calls go upstream."""
    try:
        return await cache.aget(key)
    except Exception:
        log.warning("response cache unavailable", exc_info=True)
        return None


async def _cache_set(key: str, value: dict[str, Any]) -> None:
    try:
        await cache.aset(key, value, timeout=settings.CHAT_CACHE_TTL_SECONDS)
    except Exception:
        log.warning("response cache unavailable", exc_info=True)


async def run_chat(origin: metering.Origin, caller: Caller, state: ApiRequestState, params: ChatParams) -> ChatOutcome:
    """A plain chat call. `origin`: the HTTP request, or the console's base URL (for 402 links)."""
    use_cache = params.cache_strategy == "infrai"
    if use_cache:
        the_plan = await plan_async(caller.account, params, state.routing_version)
        cached = await _cache_get(cache_key(caller, params))
        if cached is not None:
            return await _cache_hit(origin, caller, state, the_plan, cached)
        hold = await take_hold(origin, caller, state, the_plan, params)
    else:
        the_plan, hold = await plan_and_hold(origin, caller, state, params)
    last_error: VendorError | None = None
    for candidate in the_plan.chain:
        try:
            result = await candidate.vendor.chat(chat_request(candidate, params), candidate.credential)
        except VendorError as exc:
            last_error = scrubbed(exc, candidate)
            if exc.retryable:
                continue
            break
        except asyncio.CancelledError:
            await finish_even_if_cancelled(_settle_cancelled(caller, state, params, the_plan, hold, candidate))
            raise
        usage = measured_usage(result.usage, the_plan, result.content)
        result.usage = usage
        cost = actual_cost_nano(candidate, usage, params)
        await finish_even_if_cancelled(
            metering.settle_call(hold, caller, state.request_id, cost, _facts(candidate, usage, state))
        )
        if use_cache:
            await _cache_set(
                cache_key(caller, params),
                {
                    "content": result.content,
                    "finish_reason": result.finish_reason,
                    "model": result.model,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "candidate": candidate.entry.pk,
                },
            )
        return ChatOutcome(result, candidate, cost, meta(state, candidate, cost))
    await metering.release_call(hold)
    assert last_error is not None
    raise ApiError(last_error.status, last_error.code, last_error.message, vendor=the_plan.chain[-1].entry.vendor)


async def _settle_cancelled(
    caller: Caller, state: ApiRequestState, params: ChatParams, the_plan: Plan, hold: Hold, candidate: Candidate
) -> None:
    """The client went away while the vendor was answering (Django cancels the view): like a
    stream cancelled before its first delta, the call is recorded as cancelled and charged for
    its prompt, which the vendor was sent, and its hold is closed now, not by the sweeper."""
    usage = Usage(the_plan.prompt_tokens, 0)
    cost = actual_cost_nano(candidate, usage, params)
    await metering.settle_call(
        hold, caller, state.request_id, cost, _facts(candidate, usage, state, status="cancelled")
    )


async def _cache_hit(
    origin: metering.Origin, caller: Caller, state: ApiRequestState, the_plan: Plan, cached: dict[str, Any]
) -> ChatOutcome:
    candidate = next((c for c in the_plan.chain if c.entry.pk == cached["candidate"]), the_plan.chain[0])
    usage = Usage(cached["input_tokens"], cached["output_tokens"])
    hold = await metering.hold_or_402(origin, caller, state.request_id, 0, "chat (cache hit)")
    await metering.settle_call(hold, caller, state.request_id, 0, _facts(candidate, usage, state, cache_hit=True))
    result = ChatResult(cached["content"], cached["finish_reason"], usage, cached["model"])
    return ChatOutcome(result, candidate, 0, meta(state, candidate, 0, cache_hit=True))


# --- Streaming --------------------------------------------------------------------------------


@dataclass
class StreamEvent:
    kind: str  # "delta" | "final" | "error"
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    metadata: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    model: str = ""


async def open_stream(
    origin: metering.Origin, caller: Caller, state: ApiRequestState, params: ChatParams
) -> AsyncIterator[StreamEvent]:
    """Validate, route and hold before the response starts (so errors are plain JSON), then stream.

    `origin`: the HTTP request, or the console's base URL (for 402 links)."""
    the_plan, hold = await plan_and_hold(origin, caller, state, params)
    return _stream(caller, state, params, the_plan, hold)


async def _stream(
    caller: Caller, state: ApiRequestState, params: ChatParams, the_plan: Plan, hold: Hold
) -> AsyncIterator[StreamEvent]:
    delivered: list[str] = []
    usage: Usage | None = None
    finish: str | None = None
    served: Candidate | None = None
    status = "ok"
    try:
        for index, candidate in enumerate(the_plan.chain):
            served = candidate
            try:
                async for delta in candidate.vendor.chat_stream(chat_request(candidate, params), candidate.credential):
                    if delta.usage is not None:
                        usage = delta.usage
                    if delta.finish_reason:
                        finish = delta.finish_reason
                    if delta.text:
                        delivered.append(delta.text)
                        yield StreamEvent("delta", text=delta.text, model=candidate.model_name)
                break
            except VendorError as exc:
                scrubbed(exc, candidate)
                more = index + 1 < len(the_plan.chain)
                if not delivered and exc.retryable and more:
                    continue
                status = "cut" if delivered else "failed"
                yield StreamEvent(
                    "error", error={"code": exc.code, "message": exc.message, "vendor": candidate.entry.vendor}
                )
                break
        if status == "ok":
            final_usage = measured_usage(usage or Usage(), the_plan, "".join(delivered))
            cost = actual_cost_nano(served, final_usage, params) if served else 0
            yield StreamEvent(
                "final",
                finish_reason=finish or "stop",
                usage=final_usage,
                metadata=meta(state, served, cost),
                model=served.model_name if served else "",
            )
    except (asyncio.CancelledError, GeneratorExit):
        status = "cancelled"
        raise
    finally:
        await finish_even_if_cancelled(
            _close_stream(caller, state, params, the_plan, hold, served, usage, delivered, status)
        )


async def _close_stream(
    caller: Caller,
    state: ApiRequestState,
    params: ChatParams,
    the_plan: Plan,
    hold: Hold,
    served: Candidate | None,
    usage: Usage | None,
    delivered: list[str],
    status: str,
) -> None:
    """Charge what was delivered (the whole call when it finished), or release when nothing was."""
    if served is None or (status == "failed" and not delivered):
        await metering.release_call(hold)
        return
    if status == "ok" and usage is not None:
        final_usage = measured_usage(usage, the_plan, "".join(delivered))
    else:
        text = "".join(delivered)
        final_usage = Usage(the_plan.prompt_tokens, tokens.count_text(text) if text else 0)
    cost = actual_cost_nano(served, final_usage, params)
    await metering.settle_call(hold, caller, state.request_id, cost, _facts(served, final_usage, state, status=status))
