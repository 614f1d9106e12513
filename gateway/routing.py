"""Choosing who serves a call: `model` (and `vendor`) pick; otherwise `task` + `prefer` rank.

A vendor is usable for a caller when the platform has a credential for it or the caller has a
BYOK credential for it. The sandbox is used when asked for (its models, `vendor: sandbox`) or
when no real vendor is usable; it never stands in silently for a real vendor that was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save

from console.models import Account
from gateway import catalog
from gateway.api import ApiError, field_error
from gateway.models import CatalogModel
from gateway.models_byok import BYOKCredential
from gateway.vendors import VENDORS, get_vendor
from gateway.vendors.base import Credential, Vendor
from gateway.vendors.sandbox import catalog_model_id as sandbox_catalog_id

TASKS = ("general", "reasoning", "coding", "long_context")
PREFERENCES = ("balanced", "cheapest", "smartest")


@dataclass(frozen=True)
class Candidate:
    entry: CatalogModel
    vendor: Vendor
    credential: Credential
    model_name: str  # what the vendor is asked for (a sandbox name may carry a failure directive)


def byok_vendors(account_id: int) -> frozenset[str]:
    """Vendors the account has an active BYOK credential for, from this process's copy (see
    gateway/catalog.py). A credential added since is seen at once here and, with Redis, in every
    process; a revoked one still listed only costs the lookup that then finds nothing."""

    def load() -> frozenset[str]:
        return frozenset(
            BYOKCredential.objects.filter(account_id=account_id, revoked_at__isnull=True)
            .exclude(secret_encrypted="")
            .values_list("provider", flat=True)
        )

    return catalog.routing_data.get(f"byok:{account_id}", load)


def _byok_changed(**_: Any) -> None:
    catalog.routing_data.changed()


post_save.connect(_byok_changed, sender=BYOKCredential, dispatch_uid="byok-credential-saved")
post_delete.connect(_byok_changed, sender=BYOKCredential, dispatch_uid="byok-credential-deleted")


def credential_for(account: Account, vendor: Vendor) -> Credential | None:
    from gateway import byok

    if vendor.name in byok_vendors(account.pk):
        if not catalog.loads_allowed():
            raise catalog.NotCached(f"byok credential {vendor.name}")  # decrypted per call, never kept
        own = byok.credential_for(account, vendor.name)
    else:
        own = None
    return own or vendor.platform_credential()


def _price_weight(entry: CatalogModel) -> Decimal:
    return (entry.input_per_mtok + entry.output_per_mtok * 3) * catalog.usd_rate(entry)


def candidates(
    account: Account,
    capability: str,
    *,
    model: str | None = None,
    vendor: str | None = None,
    task: str | None = None,
    prefer: str | None = None,
) -> list[Candidate]:
    if vendor is not None and get_vendor(vendor) is None:
        raise field_error("vendor", f"Unknown vendor {vendor!r}; known: {', '.join(sorted(VENDORS))}.")
    if task is not None and task not in TASKS:
        raise field_error("task", f"task must be one of {', '.join(TASKS)}.")
    if prefer is not None and prefer not in PREFERENCES:
        raise field_error("prefer", f"prefer must be one of {', '.join(PREFERENCES)}.")

    known_catalog = catalog.snapshot()
    entries = known_catalog.by_capability.get(capability, [])
    if vendor:
        entries = [e for e in entries if e.vendor == vendor]
    if model:
        requested = [e for e in entries if e.model_id == model]
        if not requested and sandbox_catalog_id(model) != model:
            sandbox_id = sandbox_catalog_id(model)
            requested = [e for e in entries if e.model_id == sandbox_id and e.vendor == "sandbox"]
        entries = requested
        if not entries:
            known = any(e.model_id == model and e.enabled for e in known_catalog.entries)
            if known:
                raise field_error(
                    "model",
                    f"Model {model!r} does not serve {capability}" + (f" at vendor {vendor}." if vendor else "."),
                )
            raise field_error(
                "model", f"Unknown model {model!r}. GET /v1/models lists the models.", code="UNKNOWN_MODEL"
            )

    usable: list[Candidate] = []
    unusable: list[str] = []
    credentials: dict[str, Credential | None] = {}  # one lookup (and decrypt) per vendor
    for entry in entries:
        vendor_impl = get_vendor(entry.vendor)
        if vendor_impl is None or capability not in vendor_impl.capabilities:
            continue
        if entry.vendor == "sandbox" and not settings.SANDBOX_ENABLED:
            continue
        if entry.vendor not in credentials:
            credentials[entry.vendor] = credential_for(account, vendor_impl)
        credential = credentials[entry.vendor]
        if credential is None:
            unusable.append(entry.vendor)
            continue
        name = model or entry.model_id
        # A per-chip price only holds on that chip: the vendor is asked for "model@chip".
        usable.append(Candidate(entry, vendor_impl, credential, f"{name}@{entry.chip}" if entry.chip else name))

    if not usable:
        if unusable:
            names = ", ".join(sorted(set(unusable)))
            raise ApiError(
                400,
                "VENDOR_NOT_CONFIGURED",
                f"No credential for {names} on this server; register your own with /v1/account/byok or choose another model.",
                field="vendor" if vendor else "model",
            )
        raise ApiError(
            400, "NO_MODEL_AVAILABLE", f"No model available for {capability} with these choices.", field="model"
        )

    if not model and not vendor:
        task_name = task or "general"
        by_task = [c for c in usable if task_name in (c.entry.tasks or [])] or usable
        real = [c for c in by_task if c.entry.vendor != "sandbox"]
        usable = real or by_task

    preference = prefer or "balanced"
    if preference == "cheapest":
        usable.sort(key=lambda c: (_price_weight(c.entry), -c.entry.quality_rank))
    elif preference == "smartest":
        usable.sort(key=lambda c: (-c.entry.quality_rank, _price_weight(c.entry)))
    else:
        usable.sort(
            key=lambda c: (
                -(Decimal(c.entry.quality_rank) / (Decimal(1) + _price_weight(c.entry))),
                -c.entry.quality_rank,
            )
        )
    return usable


def candidates_for_body(account: Account, capability: str, body: dict[str, Any]) -> list[Candidate]:
    """`candidates` from a request body's model, vendor, task and prefer, refusing wrong types."""
    choices: dict[str, str | None] = {}
    for name in ("model", "vendor", "task", "prefer"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise field_error(name, f"{name} must be a non-empty string.")
        choices[name] = value
    return candidates(account, capability, **choices)
