"""Holding credit before an upstream call and settling it after, with the usage record.

Views call `hold_or_402` before the call and exactly one of `settle_call` / `release_call`
after it. Both are idempotent per request id (the ledger's unique references).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.http import HttpRequest

from billing import ledger
from billing.models import Hold, UsageRecord
from gateway.api import ApiError, Caller
from infrai.lib.money import NANO_PER_USD, format_usd
from infrai.lib.sync import finish_or_undo


@dataclass
class UsageFacts:
    capability: str
    model: str = ""
    vendor: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    units: dict | None = None
    latency_ms: int = 0
    cache_hit: bool = False
    byok: bool = False
    status: str = "ok"


# Where a 402 sends the user: an HTTP request (its host), or a base URL given directly (console calls).
Origin = HttpRequest | str


def topup_url(origin: Origin, shortfall_nano: int) -> str:
    base = settings.SITE_URL or (origin if isinstance(origin, str) else origin.build_absolute_uri("/").rstrip("/"))
    suggested = max(
        settings.TOPUP_MIN_USD, (Decimal(shortfall_nano) / NANO_PER_USD).to_integral_value(rounding=ROUND_CEILING)
    )
    return f"{base}/billing/?amount_usd={suggested}#topup"


def insufficient_credit_error(origin: Origin, refused: ledger.InsufficientCredit) -> ApiError:
    shortfall = refused.required_nano - refused.available_nano
    return ApiError(
        402,
        "INSUFFICIENT_CREDIT",
        f"This call needs up to ${format_usd(refused.required_nano)} of credit and ${format_usd(max(refused.available_nano, 0))} "
        "is available. Top up to continue.",
        balance_usd=format_usd(refused.balance_nano),
        available_usd=format_usd(refused.available_nano),
        required_usd=format_usd(refused.required_nano),
        topup_url=topup_url(origin, shortfall),
    )


async def hold_or_402(
    origin: Origin, caller: Caller, request_id: str, amount_nano: int, memo: str, ttl: timedelta | None = None
) -> Hold:
    """The call's hold (for `ttl`, by default HOLD_TTL_SECONDS). A caller cancelled (its client
    gone) while the hold is being written gets none: the hold is released at once rather than left
    held until the sweeper's expiry."""
    ttl = ttl or timedelta(seconds=settings.HOLD_TTL_SECONDS)
    try:
        return await finish_or_undo(
            ledger.areserve(caller.account.pk, amount_nano, request_id, ttl=ttl, memo=memo), ledger.arelease
        )
    except ledger.InsufficientCredit as refused:
        raise insufficient_credit_error(origin, refused) from refused


def usage_record(caller: Caller, request_id: str, cost_nano: int, facts: UsageFacts) -> UsageRecord:
    """The call's usage record, unsaved: the ledger writes it with the settlement."""
    key_id = caller.key.pk if caller.key else None
    return usage_row(request_id, caller.account.pk, caller.project.pk, key_id, cost_nano, facts)


def usage_row(
    request_id: str, account_id: int, project_id: int | None, key_id: int | None, cost_nano: int, facts: UsageFacts
) -> UsageRecord:
    """An unsaved usage record from the ids of who pays (the batch worker has ids, not a Caller)."""
    return UsageRecord(
        request_id=request_id,
        account_id=account_id,
        project_id=project_id,
        key_id=key_id,
        capability=facts.capability,
        model=facts.model,
        vendor=facts.vendor,
        input_tokens=facts.input_tokens,
        output_tokens=facts.output_tokens,
        units=facts.units or {},
        cost_nano=cost_nano,
        latency_ms=facts.latency_ms,
        cache_hit=facts.cache_hit,
        byok=facts.byok,
        status=facts.status,
    )


async def settle_call(hold: Hold, caller: Caller, request_id: str, cost_nano: int, facts: UsageFacts) -> None:
    await ledger.asettle(hold, cost_nano, usage=usage_record(caller, request_id, cost_nano, facts))


async def release_call(hold: Hold) -> None:
    await ledger.arelease(hold)
