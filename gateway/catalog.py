"""The model catalog: loading it, pricing calls, and turning usage into exact cost.

Costs are integers of nano-USD rounded up, so a call is never billed below its price.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from gateway.models import CatalogModel
from infrai.lib.money import NANO_PER_USD

CATALOG_FILE = Path(__file__).with_name("catalog.json")
_MILLION = Decimal(1_000_000)


def load_catalog(reset: bool = False) -> tuple[int, int]:
    """Insert catalog entries from the data file; existing rows keep admin edits unless `reset`."""
    data = json.loads(CATALOG_FILE.read_text())
    created = updated = 0
    for row in data["models"]:
        keys = {
            "vendor": row["vendor"],
            "model_id": row["model_id"],
            "chip": row.get("chip", ""),
            "capability": row["capability"],
        }
        fields = {k: v for k, v in row.items() if k not in keys}
        if reset:
            _, was_created = CatalogModel.objects.update_or_create(**keys, defaults=fields)
            updated += not was_created
        else:
            _, was_created = CatalogModel.objects.get_or_create(**keys, defaults=fields)
        created += was_created
    return created, updated


def usd_rate(entry: CatalogModel) -> Decimal:
    return Decimal(1) if entry.currency == "USD" else Decimal(1) / settings.CNY_PER_USD


def to_nano(amount: Decimal, entry: CatalogModel) -> int:
    """Convert an amount in the entry's currency to nano-USD, rounding up."""
    nano = amount * NANO_PER_USD
    if entry.currency != "USD":
        nano = nano / settings.CNY_PER_USD  # divide last: a rounded 1/rate would bill a nano too much
    return int(nano.to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class TokenPrice:
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal


def token_price(entry: CatalogModel, batch_mode: bool = False) -> TokenPrice:
    input_price = entry.input_per_mtok
    output_price = entry.output_per_mtok
    if batch_mode:
        # Batch is billed at cost pass-through: the vendor's batch price, never above the regular one.
        input_price = min(
            input_price, entry.batch_input_per_mtok if entry.batch_input_per_mtok is not None else input_price
        )
        output_price = min(
            output_price, entry.batch_output_per_mtok if entry.batch_output_per_mtok is not None else output_price
        )
    cached = entry.cached_input_per_mtok if entry.cached_input_per_mtok is not None else input_price
    return TokenPrice(input_price, output_price, min(cached, input_price))


def token_cost_breakdown(
    entry: CatalogModel, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, batch_mode: bool = False
) -> dict[str, Any]:
    price = token_price(entry, batch_mode)
    cached = min(cached_input_tokens, input_tokens)
    parts = {
        "input": Decimal(input_tokens - cached) * price.input_per_mtok / _MILLION,
        "cached_input": Decimal(cached) * price.cached_input_per_mtok / _MILLION,
        "output": Decimal(output_tokens) * price.output_per_mtok / _MILLION,
    }
    total = sum(parts.values(), Decimal(0))
    return {"parts": parts, "total_nano": to_nano(total, entry)}


def token_cost_nano(
    entry: CatalogModel, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, batch_mode: bool = False
) -> int:
    return token_cost_breakdown(entry, input_tokens, output_tokens, cached_input_tokens, batch_mode)["total_nano"]


def output_limit(entry: CatalogModel) -> int:
    return entry.max_output_tokens or 4096


def charged_nano(byok: bool, catalog_nano: int) -> int:
    """What the caller pays: the catalog price, or for a call on the caller's own key (BYOK)
    only the platform fee, BYOK_PLATFORM_FEE_PERCENT of it (default 0), rounded up."""
    if not byok:
        return catalog_nano
    fee = Decimal(catalog_nano) * settings.BYOK_PLATFORM_FEE_PERCENT / 100
    return int(fee.to_integral_value(rounding=ROUND_CEILING))
