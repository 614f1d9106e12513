"""Idempotency keys: the same key and body replay the stored answer; another body is a 422."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from billing.models import UsageRecord
from console.models import Account
from gateway.api import ApiError, field_error
from gateway.models import IdempotencyRecord

log = logging.getLogger(__name__)
MAX_KEY_LENGTH = 200
# A charged call's answer is stored through a database restart (psycopg_pool's reconnection
# backoff alone can take ~12 s); a failed call's claim is only worth a short retry, as a dead
# claim is taken over once it is older than a hold lives.
ANSWER_RETRY_SECONDS = 30.0
ABANDON_RETRY_SECONDS = 2.0


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


def _new_record(
    account: Account, scope: str, key: str, request_hash: str, now: Any, request_id: str = ""
) -> IdempotencyRecord:
    """Claim (account, scope, key) for the window; IntegrityError if an earlier call holds it."""
    return IdempotencyRecord.objects.create(
        account=account,
        scope=scope,
        key=key,
        request_hash=request_hash,
        request_id=request_id,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS),
    )


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
            record = _new_record(account, scope, key, request_hash, now)
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


class AnswerLost(ApiError):
    def __init__(self, request_id: str) -> None:
        super().__init__(
            409,
            "IDEMPOTENCY_ANSWER_LOST",
            f"The first call with this idempotency_key (request {request_id}) was charged, but a server "
            "fault lost its answer; it will not be charged again. Use a new key to ask again.",
            field="idempotency_key",
            original_request_id=request_id,
        )


def _abandoned(record: IdempotencyRecord, now: Any) -> bool:
    """Whether an unanswered claim (the caller checks it has no response) belongs to a call that died (its process or database went away
    before it could answer or abandon): older than a hold lives, so any hold it took is released."""
    return record.created_at <= now - timedelta(seconds=settings.HOLD_TTL_SECONDS + 5)


def claim(
    account: Account, scope: str, key: str, body: dict[str, Any], request_id: str = ""
) -> IdempotencyRecord | dict[str, Any]:
    """Claim the key for this call, or return the stored response of an earlier identical call.

    Raises IDEMPOTENCY_KEY_REUSED (422) for another body and IDEMPOTENCY_IN_PROGRESS (409)
    while the first call with this key is still running. A claim whose call died unanswered is
    taken over when it did not charge, and answered IDEMPOTENCY_ANSWER_LOST when it did.
    """
    request_hash = canonical_hash(body)
    now = timezone.now()
    IdempotencyRecord.objects.filter(account=account, scope=scope, key=key, expires_at__lte=now).delete()
    for _ in range(2):
        try:
            with transaction.atomic():
                return _new_record(account, scope, key, request_hash, now, request_id)
        except IntegrityError:
            existing = _earlier_call(account, scope, key, request_hash)
        if existing.response is not None:
            return dict(existing.response)
        # Only metered calls name their request: whether one charged is then in the ledger.
        if not existing.request_id or not _abandoned(existing, now):
            raise InProgress()
        if UsageRecord.objects.filter(request_id=existing.request_id).exists():
            raise AnswerLost(existing.request_id)
        IdempotencyRecord.objects.filter(pk=existing.pk, response__isnull=True).delete()
    raise InProgress()


def _write_through_outages(write: Callable[[], None], what: str, seconds: float) -> None:
    """Retry a write across a short database outage, on a fresh connection, for up to `seconds`."""
    deadline = time.monotonic() + seconds
    for attempt in itertools.count(1):
        try:
            write()
            return
        except (OperationalError, InterfaceError):
            pause = min(0.4 * 2 ** (attempt - 1), 4.0)
            if time.monotonic() + pause > deadline:
                raise
            log.warning("could not %s (attempt %d), retrying", what, attempt, exc_info=True)
            connection.close()
            time.sleep(pause)


def complete(record: IdempotencyRecord, status: int, response: dict[str, Any]) -> None:
    _write_through_outages(
        lambda: IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=status, response=response),
        "store an idempotent answer",
        ANSWER_RETRY_SECONDS,
    )


def abandon(record: IdempotencyRecord) -> None:
    """Forget a claim whose call failed without cost, so a retry with the key runs again."""
    _write_through_outages(
        lambda: IdempotencyRecord.objects.filter(pk=record.pk, response__isnull=True).delete(),
        "abandon an idempotency claim",
        ABANDON_RETRY_SECONDS,
    )
