"""The non-chat capabilities: one metered flow (route, hold, call with failover, settle) and
the pricing of each capability's units."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from gateway import catalog, metering, routing
from gateway.api import ApiError, ApiRequestState, Caller
from gateway.chat import meta, scrubbed
from gateway.models import CatalogModel
from gateway.routing import Candidate
from gateway.vendors.base import VendorError
from infrai.lib.sync import finish_even_if_cancelled

T = TypeVar("T")


def per_image_nano(entry: CatalogModel, images: int) -> int:
    return catalog.to_nano(entry.per_image * images, entry)


def per_kchar_nano(entry: CatalogModel, characters: int) -> int:
    return catalog.to_nano(entry.per_kchar * Decimal(characters) / 1000, entry)


def per_minute_nano(entry: CatalogModel, seconds: float) -> int:
    return catalog.to_nano(entry.per_minute * Decimal(str(round(seconds, 3))) / 60, entry)


def input_tokens_nano(entry: CatalogModel, input_tokens: int) -> int:
    return catalog.token_cost_nano(entry, input_tokens, 0)


@dataclass
class Served:
    result: Any
    candidate: Candidate
    cost_nano: int
    metadata: dict[str, Any]


async def route(caller: Caller, capability: str, body: dict[str, Any]) -> list[Candidate]:
    """Candidates for `capability` from the body's model, vendor, task and prefer (validated)."""
    return await sync_to_async(routing.candidates_for_body)(caller.account, capability, body)


async def metered(
    request: HttpRequest,
    state: ApiRequestState,
    capability: str,
    chain: list[Candidate],
    worst_case: Callable[[Candidate], int],
    call: Callable[[Candidate], Awaitable[tuple[T, int, metering.UsageFacts]]],
    max_cost_multiplier: float = 1.5,
) -> Served:
    """Hold the worst case, call the first candidate (failing over on retryable errors to those
    within the cost cap), settle the actual cost with its usage record, or release."""
    caller = state.caller
    assert caller is not None
    cap = int(worst_case(chain[0]) * max_cost_multiplier)
    chain = [chain[0]] + [c for c in chain[1:] if worst_case(c) <= cap]
    # `worst_case` is the catalog price (the failover cap compares those); `call` returns the charge.
    hold_nano = max(catalog.charged_nano(c.credential.byok, worst_case(c)) for c in chain)
    hold = await metering.hold_or_402(request, caller, state.request_id, hold_nano, capability)
    last_error: VendorError | None = None
    try:
        for candidate in chain:
            try:
                result, cost, facts = await call(candidate)
            except VendorError as exc:
                last_error = scrubbed(exc, candidate)
                if exc.retryable:
                    continue
                break
            facts.latency_ms = int((time.perf_counter() - state.started) * 1000)
            await finish_even_if_cancelled(metering.settle_call(hold, caller, state.request_id, cost, facts))
            return Served(result, candidate, cost, meta(state, candidate, cost))
    except BaseException:
        # Also a client that went away (Django cancels the view): the hold is closed now, uncharged.
        await finish_even_if_cancelled(metering.release_call(hold))
        raise
    await metering.release_call(hold)
    assert last_error is not None
    raise ApiError(last_error.status, last_error.code, last_error.message, vendor=chain[-1].entry.vendor)


def facts(capability: str, candidate: Candidate, **kwargs: Any) -> metering.UsageFacts:
    return metering.UsageFacts(
        capability=capability,
        model=candidate.entry.model_id,
        vendor=candidate.entry.vendor,
        byok=candidate.credential.byok,
        **kwargs,
    )


def charged(candidate: Candidate, catalog_nano: int) -> int:
    return catalog.charged_nano(candidate.credential.byok, catalog_nano)
