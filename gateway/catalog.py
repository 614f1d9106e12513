"""The model catalog: loading it, pricing calls, and turning usage into exact cost.

Costs are integers of nano-USD rounded up, so a call is never billed below its price.

Routing reads the catalog (and which vendors each account has a BYOK credential for) on every
call, and both change rarely, so each process keeps a copy (`routing_data`): it is dropped when a
catalog row or BYOK credential is saved or deleted here, when the catalog is reloaded, and when the
shared version key in Django's cache moves (another process changed something; with Redis as the
cache every process sees that on its next call). Without a shared cache (no REDIS_URL) another
process's change reaches this one only when its copy expires: ROUTING_CACHE_SECONDS, default 60.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from console.keys import shared_cache
from gateway.models import CatalogModel
from infrai.lib.money import NANO_PER_USD

log = logging.getLogger(__name__)
CATALOG_FILE = Path(__file__).with_name("catalog.json")
_MILLION = Decimal(1_000_000)
T = TypeVar("T")


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
    routing_data.changed()
    return created, updated


# --- This process's copy of the routing data ----------------------------------------------------


class NotCached(Exception):
    """A value was needed that this process has no copy of, while loading was not allowed."""


# Set only within `cached_only` blocks: loads (database queries) are not allowed on the event loop,
# and the shared version may have been read already with the call's other Redis reads.
_cached_only: contextvars.ContextVar[bool] = contextvars.ContextVar("routing_cached_only", default=False)
_known_version: contextvars.ContextVar[str | None] = contextvars.ContextVar("routing_version", default=None)


@contextmanager
def cached_only(shared_version: str | None = None) -> Iterator[None]:
    """Within this block `RoutingData.get` raises NotCached instead of loading, and takes
    `shared_version` (when given) as the shared version instead of reading it."""
    only = _cached_only.set(True)
    known = _known_version.set(shared_version)
    try:
        yield
    finally:
        _known_version.reset(known)
        _cached_only.reset(only)


def loads_allowed() -> bool:
    return not _cached_only.get()


@dataclass
class _Copy:
    version: str | None
    items: dict[str, tuple[float, Any]] = field(default_factory=dict)


class RoutingData:
    """Values loaded from the database once and kept in this process until the shared version
    moves or they are older than `max_age()` seconds."""

    VERSION_KEY = "gateway:routing-data-version"
    MAX_ITEMS = 10_000  # one per account with BYOK lookups; the copy starts over beyond it

    def __init__(self) -> None:
        self._copy = _Copy(version=None)
        self._lock = threading.Lock()

    @staticmethod
    def max_age() -> float:
        return float(settings.ROUTING_CACHE_SECONDS)

    def _shared_version(self) -> str | None:
        """The version in Django's cache (made up if missing, e.g. after a cache flush); None
        when the cache is down, and then only the age limit applies."""
        known = _known_version.get()
        if known is not None:
            return known
        try:
            cache = shared_cache()
            version = cache.get(self.VERSION_KEY)
            if version is None:
                cache.add(self.VERSION_KEY, uuid.uuid4().hex, timeout=None)
                version = cache.get(self.VERSION_KEY)
        except Exception:
            log.warning("routing data version unavailable (cache down?)", exc_info=True)
            return None
        return version

    def get(self, name: str, load: Callable[[], T]) -> T:
        version = self._shared_version()
        current = self._copy
        if version is not None and version != current.version:
            current = self._copy = _Copy(version=version)
        now = time.monotonic()
        kept = current.items.get(name)
        if kept is not None and now - kept[0] <= self.max_age():
            return kept[1]
        if not loads_allowed():
            raise NotCached(name)
        value = load()
        with self._lock:
            if len(current.items) >= self.MAX_ITEMS:
                current.items.clear()
            current.items[name] = (now, value)
        return value

    def changed(self) -> None:
        """Drop this process's copy now and, once the change is committed, every other's."""
        self._copy = _Copy(version=None)
        transaction.on_commit(self._move_shared_version)

    def _move_shared_version(self) -> None:
        self._copy = _Copy(version=None)
        try:
            shared_cache().set(self.VERSION_KEY, uuid.uuid4().hex, timeout=None)
        except Exception:
            log.warning(
                "routing data version not moved (cache down?): other processes keep their copy for up to %s s",
                self.max_age(),
                exc_info=True,
            )


routing_data = RoutingData()


@dataclass(frozen=True)
class CatalogSnapshot:
    entries: list[CatalogModel]  # every row, enabled or not, in the catalog's order
    by_capability: dict[str, list[CatalogModel]]  # enabled rows only


def _load_snapshot() -> CatalogSnapshot:
    entries = list(CatalogModel.objects.all())
    by_capability: dict[str, list[CatalogModel]] = {}
    for entry in entries:
        if entry.enabled:
            by_capability.setdefault(entry.capability, []).append(entry)
    return CatalogSnapshot(entries, by_capability)


def snapshot() -> CatalogSnapshot:
    """The catalog as this process knows it. Its rows are shared between calls: read them only."""
    return routing_data.get("catalog", _load_snapshot)


def _catalog_row_changed(**_: Any) -> None:
    routing_data.changed()


post_save.connect(_catalog_row_changed, sender=CatalogModel, dispatch_uid="catalog-row-saved")
post_delete.connect(_catalog_row_changed, sender=CatalogModel, dispatch_uid="catalog-row-deleted")


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
