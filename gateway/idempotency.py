"""Idempotency keys: the same key and body replay the stored answer; another body is a 422."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from console.models import Account
from gateway.api import ApiError, field_error
from gateway.models import IdempotencyRecord

MAX_KEY_LENGTH = 200


def canonical_hash(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON form (sorted keys, no whitespace), idempotency key left out."""
    material = {k: v for k, v in body.items() if k != "idempotency_key"}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def explicit_key(request: HttpRequest, body: dict[str, Any], *, required: bool) -> str | None:
    key = request.headers.get("Idempotency-Key") or body.get("idempotency_key")
    if key is None or key == "":
        if required:
            raise field_error(
                "idempotency_key",
                "This call creates a resource and needs an idempotency_key (body field or Idempotency-Key header).",
                code="IDEMPOTENCY_KEY_REQUIRED",
            )
        return None
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        raise field_error(
            "idempotency_key", f"idempotency_key must be a string of at most {MAX_KEY_LENGTH} characters."
        )
    return key


def _earlier_call(account: Account, scope: str, key: str, request_hash: str) -> IdempotencyRecord:
    """The record of the earlier call with this key; a different body is a 422."""
    existing = IdempotencyRecord.objects.filter(account=account, scope=scope, key=key).first()
    if existing is None:
        raise ApiError(409, "IDEMPOTENCY_CONFLICT", "A concurrent call with this idempotency_key failed; retry.")
    if existing.request_hash != request_hash:
        raise ApiError(
            422,
            "IDEMPOTENCY_KEY_REUSED",
            "This idempotency_key was used with a different request body; use a new key for a new request.",
            field="idempotency_key",
        )
    return existing


def run_once(
    account: Account,
    scope: str,
    key: str,
    body: dict[str, Any],
    create: Callable[[], tuple[int, dict[str, Any], dict[str, Any]]],
) -> tuple[int, dict[str, Any], bool]:
    """Run `create` once per (account, scope, key) inside the window.

    `create` returns (status, stored_response, first_response): the first caller gets
    `first_response` (which may hold a secret); replays get `stored_response` marked replayed.
    Returns (status, response, replayed).
    """
    request_hash = canonical_hash(body)
    now = timezone.now()
    IdempotencyRecord.objects.filter(account=account, scope=scope, key=key, expires_at__lte=now).delete()
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                account=account,
                scope=scope,
                key=key,
                request_hash=request_hash,
                created_at=now,
                expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS),
            )
            status, stored, first = create()
            record.status_code = status
            record.response = stored
            record.save(update_fields=["status_code", "response"])
            return status, first, False
    except IntegrityError:
        existing = _earlier_call(account, scope, key, request_hash)
    return existing.status_code or 200, dict(existing.response or {}), True


# --- Two-phase form for calls that take time (upstream calls) --------------------------------


class InProgress(ApiError):
    def __init__(self) -> None:
        super().__init__(
            409,
            "IDEMPOTENCY_IN_PROGRESS",
            "A request with this idempotency_key is still running; retry shortly to get its result.",
            field="idempotency_key",
            retry_after_seconds=1,
        )


def derived_key(account: Account, client_request_id: str, capability: str, body: dict[str, Any]) -> str:
    """API.md's derived key: sha256(account_id + request_id + capability + content_hash)."""
    material = f"{account.public_id}{client_request_id}{capability}{canonical_hash(body)}"
    return "derived:" + hashlib.sha256(material.encode()).hexdigest()


def claim(account: Account, scope: str, key: str, body: dict[str, Any]) -> IdempotencyRecord | dict[str, Any]:
    """Claim the key for this call, or return the stored response of an earlier identical call.

    Raises IDEMPOTENCY_KEY_REUSED (422) for another body and IDEMPOTENCY_IN_PROGRESS (409)
    while the first call with this key is still running.
    """
    request_hash = canonical_hash(body)
    now = timezone.now()
    IdempotencyRecord.objects.filter(account=account, scope=scope, key=key, expires_at__lte=now).delete()
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                account=account,
                scope=scope,
                key=key,
                request_hash=request_hash,
                created_at=now,
                expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS),
            )
    except IntegrityError:
        existing = _earlier_call(account, scope, key, request_hash)
    if existing.response is None:
        raise InProgress()
    return dict(existing.response)


def complete(record: IdempotencyRecord, status: int, response: dict[str, Any]) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=status, response=response)


def abandon(record: IdempotencyRecord) -> None:
    """Forget a claim whose call failed without cost, so a retry with the key runs again."""
    IdempotencyRecord.objects.filter(pk=record.pk, response__isnull=True).delete()
