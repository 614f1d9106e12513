"""Every rule about batches: submitting, running items on workers, cancelling, timing out,
exporting and purging.

Money: at submit every item gets its own hold (all at once with `ledger.reserve_many`, so a
batch is refused whole when credit is short). The hold is the arbiter of an item's fate: the
transaction that closes it (settle on success, release on failure, cancel or timeout) is the
one that writes the item's final state, so an item is charged at most once even if two workers
ran it.

Workers: a django-tasks task (batches/tasks.py) claims one item at a time with a conditional
UPDATE (queued, or running with an expired lease), keeps the lease alive while the call runs
and stops the call when the lease is lost. A worker killed with SIGKILL leaves a lease that
runs out; `recover_stalled` (housekeeping) requeues the item and enqueues a task for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

from batches.models import (
    ACTIVE_BATCH_STATES,
    UNFINISHED_ITEM_STATES,
    Batch,
    BatchExport,
    BatchItem,
    BatchState,
    ItemState,
)
from billing import ledger
from billing.models import Hold, HoldState
from console.models import Account
from gateway import catalog, idempotency, metering
from gateway import files as stored_files
from gateway.api import ApiError, Caller, field_error
from gateway.chat import scrubbed
from gateway.models import IdempotencyRecord
from gateway.operations import PREPARERS, Prepared
from gateway.routing import Candidate
from gateway.vendors.base import VendorError
from gateway.views_ai import claim_idempotency
from infrai.lib.ids import uuid7
from infrai.lib.money import format_usd
from jobs import live

log = logging.getLogger(__name__)

CAPABILITIES = tuple(PREPARERS)
DEFAULT_TIMEOUT = "24h"
TIMEOUT_BOUNDS = (60, 7 * 24 * 3600)
TIMEOUT_PATTERN = re.compile(r"^(\d{1,7})([smhd])$")
TIMEOUT_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_RETENTION_DAYS = 30
RETENTION_BOUNDS = (1, 365)
LIMIT_BOUNDS = (1, 200)
DEFAULT_LIMIT = 50
MAX_ATTEMPTS = 3
MAX_CONVERSATION_ID = 200
MAX_METADATA_BYTES = 16_384
EXPORT_FORMATS = ("jsonl", "csv")
# Rough seconds per item, only for `estimated_eta`.
TYPICAL_SECONDS = {"chat": 3.0, "embed": 0.5, "image": 6.0, "tts": 2.0, "rerank": 0.5}
# Live updates: at most one per this many seconds per batch and process, besides state changes.
ANNOUNCE_INTERVAL = 0.3
# Holds outlive the batch's deadline, so the hold sweeper never closes one the timeout chore should.
HOLD_MARGIN = timedelta(hours=1)
CURSOR_SALT = "batches.cursor"


# --- Reading requests -------------------------------------------------------------------------


def parse_timeout(value: Any) -> tuple[str, int]:
    """`batch_timeout` such as "24h", "90m", "3600s" or "2d": (as given, seconds)."""
    if value is None:
        value = DEFAULT_TIMEOUT
    match = TIMEOUT_PATTERN.match(value.strip()) if isinstance(value, str) else None
    low, high = TIMEOUT_BOUNDS
    if match is None:
        raise field_error("batch_timeout", 'batch_timeout must look like "24h", "90m", "3600s" or "2d".')
    seconds = int(match.group(1)) * TIMEOUT_UNITS[match.group(2)]
    if not low <= seconds <= high:
        raise field_error("batch_timeout", f"batch_timeout must be from {low // 60} minute to {high // 86400} days.")
    return value.strip(), seconds


def parse_metadata(body: dict[str, Any], name: str = "metadata") -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise field_error(name, f"{name} must be an object of keys and values.")
    if len(json.dumps(value, ensure_ascii=False)) > MAX_METADATA_BYTES:
        raise field_error(name, f"{name} may be at most {MAX_METADATA_BYTES} bytes of JSON.")
    return value


def parse_retention(body: dict[str, Any]) -> int:
    value = body.get("retention_days")
    low, high = RETENTION_BOUNDS
    if value is None:
        raise field_error(
            "retention_days", f"retention_days is required: whole days from {low} to {high}.", code="MISSING_FIELD"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise field_error("retention_days", f"retention_days must be an integer from {low} to {high}.")
    return value


def parse_limit(request: HttpRequest) -> int:
    raw = request.GET.get("limit")
    low, high = LIMIT_BOUNDS
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise field_error("limit", f"limit must be an integer from {low} to {high}.")
    return int(raw)


def make_cursor(scope: str, position: Any) -> str:
    return signing.dumps({"s": scope, "p": position}, salt=CURSOR_SALT, compress=True)


def read_cursor(request: HttpRequest, scope: str) -> Any:
    """The position a `next_cursor` points after, or None for the first page."""
    raw = request.GET.get("cursor")
    if not raw:
        return None
    try:
        data = signing.loads(raw, salt=CURSOR_SALT)
    except signing.BadSignature as exc:
        raise field_error("cursor", "cursor is not a next_cursor this API gave out.") from exc
    if not isinstance(data, dict) or data.get("s") != scope:
        raise field_error("cursor", "cursor belongs to another listing.")
    return data.get("p")


def get_batch(account: Account, batch_id: str, *, for_items: bool = False) -> Batch:
    """The caller's batch, or 404 whatever the reason (another account's id looks unknown)."""
    batch = Batch.objects.select_related("account").filter(account=account, public_id=batch_id).first()
    if batch is None:
        raise ApiError(404, "NOT_FOUND", f"No batch {batch_id!r} in your account.", field="batch_id")
    if for_items and batch.purged_at is not None:
        raise ApiError(
            410,
            "RESULTS_PURGED",
            f"The results of {batch_id} were purged when its retention ended ({batch.expires_at:%Y-%m-%d}).",
            field="batch_id",
        )
    return batch


# --- Submitting -------------------------------------------------------------------------------


@dataclass
class ValidItem:
    index: int
    capability: str
    body: dict[str, Any]
    conversation_id: str
    hold_nano: int


def item_error(index: int, field_name: str, message: str, reason: str = "INVALID_FIELD") -> ApiError:
    return ApiError(422, "INVALID_BATCH_ITEM", message, index=index, field=field_name, reason=reason)


def run_body(capability: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body a batch item runs with: chat at the batch price (never above the regular one)."""
    return {**body, "batch_mode": True} if capability == "chat" else body


def plan_chain(prepared: Prepared, ceiling_nano: int | None = None) -> tuple[list[Candidate], int]:
    """As capabilities.metered: the primary and the failovers within the cost cap, and the hold
    that covers any of them. With `ceiling_nano` (the item's hold), only candidates it covers."""
    chain = prepared.chain
    cap = int(prepared.worst_case(chain[0]) * prepared.max_cost_multiplier)
    chain = [chain[0]] + [c for c in chain[1:] if prepared.worst_case(c) <= cap]

    def charge(c: Candidate) -> int:
        return catalog.charged_nano(c.credential.byok, prepared.worst_case(c))

    if ceiling_nano is not None:
        chain = [c for c in chain if charge(c) <= ceiling_nano]
    return chain, max((charge(c) for c in chain), default=0)


async def validate_item(account: Account, index: int, raw: Any) -> ValidItem:
    prefix = f"requests[{index}]"
    if not isinstance(raw, dict):
        raise item_error(index, prefix, f"{prefix} must be an object with capability and body.")
    capability = raw.get("capability")
    if capability not in PREPARERS:
        reason = "MISSING_FIELD" if capability is None else "INVALID_FIELD"
        raise item_error(
            index, f"{prefix}.capability", f"{prefix}.capability must be one of {', '.join(CAPABILITIES)}.", reason
        )
    body = raw.get("body")
    if not isinstance(body, dict):
        reason = "MISSING_FIELD" if body is None else "INVALID_FIELD"
        raise item_error(index, f"{prefix}.body", f"{prefix}.body must be the {capability} call's JSON object.", reason)
    conversation_id = raw.get("conversation_id")
    if conversation_id is None:
        conversation_id = body.get("conversation_id") or ""
    if not isinstance(conversation_id, str) or len(conversation_id) > MAX_CONVERSATION_ID:
        raise item_error(
            index,
            f"{prefix}.conversation_id",
            f"{prefix}.conversation_id must be a string of at most {MAX_CONVERSATION_ID} characters.",
        )
    try:
        prepared = await PREPARERS[capability](account, run_body(capability, body))
    except ApiError as exc:
        if exc.status >= 500:  # not the item's fault (e.g. a BYOK key this server cannot read)
            raise ApiError(exc.status, exc.code, exc.message, **{**exc.extra, "index": index}) from exc
        inner = exc.extra.get("field")
        where = f"{prefix}.body.{inner}" if inner else f"{prefix}.body"
        raise item_error(index, where, f"{prefix}: {exc.message}", exc.code) from exc
    _, hold_nano = plan_chain(prepared)
    return ValidItem(index, capability, body, conversation_id, hold_nano)


async def validate_requests(account: Account, body: dict[str, Any]) -> list[ValidItem]:
    if "requests" not in body:
        raise field_error(
            "requests", "requests is required: a list of {capability, body} objects.", code="MISSING_FIELD"
        )
    raw = body["requests"]
    if not isinstance(raw, list):
        raise field_error("requests", "requests must be a list of {capability, body} objects.")
    if len(raw) > settings.BATCH_MAX_ITEMS:
        raise field_error("requests", f"A batch holds at most {settings.BATCH_MAX_ITEMS} requests; split it.")
    return [await validate_item(account, i, item) for i, item in enumerate(raw)]


def estimated_eta(items: list[ValidItem], now: datetime) -> datetime:
    parallel = max(1, min(settings.BATCH_MAX_PARALLEL_TASKS, len(items)))
    seconds = sum(TYPICAL_SECONDS.get(item.capability, 1.0) for item in items) / parallel
    return now + timedelta(seconds=math.ceil(seconds))


def create_batch(
    origin: metering.Origin,
    caller: Caller,
    items: list[ValidItem],
    timeout: tuple[str, int],
    metadata: dict[str, Any],
) -> Batch:
    """Create the batch and its items and hold credit for every item, all or nothing (402)."""
    now = timezone.now()
    timeout_text, timeout_seconds = timeout
    total_hold = sum(item.hold_nano for item in items)
    try:
        with transaction.atomic():
            batch = Batch.objects.create(
                account=caller.account,
                project=caller.project,
                key=caller.key,
                total_count=len(items),
                estimated_cost_nano=total_hold,
                metadata=metadata,
                batch_timeout=timeout_text,
                deadline_at=now + timedelta(seconds=timeout_seconds),
                retention_days=DEFAULT_RETENTION_DAYS,
                created_at=now,
            )
            if not items:
                # The seed's own example submits an empty list: a batch with nothing to do is done.
                Batch.objects.filter(pk=batch.pk).update(
                    state=BatchState.COMPLETED,
                    started_at=now,
                    finished_at=now,
                    expires_at=now + timedelta(days=batch.retention_days),
                )
                batch.refresh_from_db()
                announce(batch, force=True)
                return batch
            holds = ledger.reserve_many(
                caller.account.pk,
                [(f"batch:{batch.public_id}:{item.index}", item.hold_nano) for item in items],
                ttl=timedelta(seconds=timeout_seconds) + timedelta(seconds=settings.JOB_LEASE_SECONDS) + HOLD_MARGIN,
                memo=f"batch {batch.public_id}",
            )
            BatchItem.objects.bulk_create(
                [
                    BatchItem(
                        batch=batch,
                        index=item.index,
                        capability=item.capability,
                        body=item.body,
                        conversation_id=item.conversation_id,
                        request_id=str(uuid7()),
                        hold=hold,
                        hold_nano=item.hold_nano,
                    )
                    for item, hold in zip(items, holds, strict=True)
                ],
                batch_size=500,
            )
            announce(batch, force=True)
            public_id = batch.public_id
            transaction.on_commit(lambda: enqueue_tasks(public_id, len(items)))
            return batch
    except ledger.InsufficientCredit as refused:
        raise metering.insufficient_credit_error(origin, refused) from refused


def enqueue_tasks(batch_public_id: str, items: int) -> int:
    from batches.tasks import run_batch

    count = max(0, min(settings.BATCH_MAX_PARALLEL_TASKS, items))
    for _ in range(count):
        run_batch.enqueue(batch_public_id)
    return count


async def submit(request: HttpRequest, caller: Caller, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """ai.batch.submit: validate every item, hold credit for all, queue the work.

    Returns (answer, replayed): a retry with the same idempotency key answers the same batch."""
    timeout = parse_timeout(body.get("batch_timeout"))
    metadata = parse_metadata(body)
    claim = await claim_idempotency(request, caller, "ai.batch.submit", body)
    if isinstance(claim, dict):
        batch = await sync_to_async(get_batch)(caller.account, claim["batch_id"])
        eta = claim.get("estimated_eta")
        return submit_json(batch, datetime.fromisoformat(eta) if eta else None), True
    try:
        items = await validate_requests(caller.account, body)
        batch = await sync_to_async(create_batch)(request, caller, items, timeout, metadata)
    except BaseException:
        if claim is not None:
            await sync_to_async(idempotency.abandon)(claim)
        raise
    answer = submit_json(batch, estimated_eta(items, batch.created_at))
    if isinstance(claim, IdempotencyRecord):
        await sync_to_async(idempotency.complete)(claim, 200, answer)
    return answer, False


# --- Running items ----------------------------------------------------------------------------


@dataclass
class Claimed:
    item_pk: int
    batch_pk: int
    batch_public_id: str
    account: Account
    project_id: int | None
    key_id: int | None
    index: int
    capability: str
    body: dict[str, Any]
    hold: Hold | None
    hold_nano: int
    request_id: str


@dataclass
class Outcome:
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    cost_nano: int = 0
    facts: metering.UsageFacts | None = None
    vendor: str = ""
    model: str = ""


def worker_name() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease() -> timedelta:
    return timedelta(seconds=settings.JOB_LEASE_SECONDS)


def claimable() -> Q:
    return Q(state=ItemState.QUEUED) | Q(state=ItemState.RUNNING, lease_until__lt=timezone.now())


def claim_next(batch_public_id: str, owner: str) -> Claimed | None:
    """Lease the batch's next item for `owner`, or None when nothing is left to run."""
    batch = (
        Batch.objects.select_related("account").filter(public_id=batch_public_id, state__in=ACTIVE_BATCH_STATES).first()
    )
    if batch is None or batch.deadline_at <= timezone.now():
        return None  # past the deadline the timeout chore fails what is left
    for _ in range(20):
        now = timezone.now()
        with transaction.atomic():
            candidates = BatchItem.objects.filter(batch=batch, attempts__lt=MAX_ATTEMPTS).filter(claimable())
            pk = candidates.order_by("index").select_for_update(skip_locked=True).values_list("pk", flat=True).first()
            if pk is None:
                return None
            # The conditional UPDATE is the claim: of two workers that picked the same row, one wins.
            won = (
                BatchItem.objects.filter(pk=pk)
                .filter(claimable())
                .update(
                    state=ItemState.RUNNING,
                    lease_owner=owner,
                    lease_until=now + lease(),
                    attempts=F("attempts") + 1,
                    started_at=now,
                )
            )
            if not won:
                continue
            if Batch.objects.filter(pk=batch.pk, state=BatchState.QUEUED).update(
                state=BatchState.RUNNING, started_at=now
            ):
                batch.refresh_from_db()
                announce(batch, force=True)
        item = BatchItem.objects.select_related("hold").get(pk=pk)
        return Claimed(
            item_pk=item.pk,
            batch_pk=batch.pk,
            batch_public_id=batch.public_id,
            account=batch.account,
            project_id=batch.project_id,
            key_id=batch.key_id,
            index=item.index,
            capability=item.capability,
            body=item.body,
            hold=item.hold,
            hold_nano=item.hold_nano,
            request_id=item.request_id,
        )
    return None


def extend_lease(item_pk: int, owner: str) -> bool:
    return bool(
        BatchItem.objects.filter(pk=item_pk, state=ItemState.RUNNING, lease_owner=owner).update(
            lease_until=timezone.now() + lease()
        )
    )


async def keep_lease(item_pk: int, owner: str) -> None:
    """Renew the lease while the call runs; return when it is lost (cancelled, timed out, taken)."""
    interval = max(settings.JOB_LEASE_SECONDS / 3, 0.05)
    while True:
        await asyncio.sleep(interval)
        if not await sync_to_async(extend_lease)(item_pk, owner):
            return


def error_json(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **extra}


def usage_json(input_tokens: int, output_tokens: int | None = None) -> dict[str, int]:
    if output_tokens is None:
        return {"prompt_tokens": input_tokens, "total_tokens": input_tokens}
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


async def stored_result(claimed: Claimed, candidate: Candidate, result: Any) -> tuple[dict[str, Any], list[str]]:
    """The item's result as JSON; generated media go to storage (signed URLs are made on read)."""
    saved: list[str] = []

    async def save(data: bytes, extension: str) -> str:
        name = await sync_to_async(stored_files.save)(claimed.account.public_id, "batches", data, extension)
        saved.append(name)
        return name

    model = candidate.model_name
    if claimed.capability == "chat":
        body: dict[str, Any] = {
            "content": result.content,
            "finish_reason": result.finish_reason,
            "model": model,
            "usage": usage_json(result.usage.input_tokens, result.usage.output_tokens),
        }
        if result.tool_calls:
            body["tool_calls"] = result.tool_calls
        return body, saved
    if claimed.capability == "embed":
        return {
            "embeddings": result.embeddings,
            "model": model,
            "usage": usage_json(result.usage.input_tokens),
        }, saved
    if claimed.capability == "image":
        images = [{"url": image} if isinstance(image, str) else {"file": await save(image, "png")} for image in result]
        return {"images": images, "model": model}, saved
    if claimed.capability == "tts":
        name = await save(result.audio, result.format)
        return {
            "audio_file": name,
            "format": result.format,
            "duration_seconds": round(result.duration_seconds, 3),
            "model": model,
        }, saved
    return {"results": result, "model": model}, saved


async def execute(claimed: Claimed) -> Outcome:
    """Re-prepare the stored call and run it with failover, as capabilities.metered does."""
    started = time.perf_counter()
    try:
        prepared = await PREPARERS[claimed.capability](claimed.account, run_body(claimed.capability, claimed.body))
    except ApiError as exc:
        return Outcome(error=error_json(exc.code, exc.message, **exc.extra))
    chain, _ = plan_chain(prepared, ceiling_nano=claimed.hold_nano)
    if not chain:
        return Outcome(
            error=error_json("PRICE_CHANGED", "Every model for this item now costs more than was held for it.")
        )
    last_error: VendorError | None = None
    vendor = ""
    for candidate in chain:
        try:
            result, cost, facts = await prepared.call(candidate)
        except VendorError as exc:
            last_error = scrubbed(exc, candidate)
            vendor = candidate.entry.vendor
            if exc.retryable:
                continue
            break
        facts.latency_ms = int((time.perf_counter() - started) * 1000)
        payload, saved = await stored_result(claimed, candidate, result)
        return Outcome(
            result=payload,
            files=saved,
            cost_nano=cost,
            facts=facts,
            vendor=candidate.entry.vendor,
            model=candidate.model_name,
        )
    assert last_error is not None
    return Outcome(error=error_json(last_error.code, last_error.message, status=last_error.status, vendor=vendor))


async def run_claimed(claimed: Claimed, owner: str) -> str:
    """Run a leased item to its end; returns what became of it."""
    call = asyncio.ensure_future(execute(claimed))
    beat = asyncio.ensure_future(keep_lease(claimed.item_pk, owner))
    try:
        await asyncio.wait({call, beat}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        beat.cancel()
        # A renewal that failed (database gone) ends the beat: the item is then left to its lease.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beat
    if not call.done():
        # The lease is gone: the item was cancelled or timed out (its hold released), or another
        # worker took it over. Whatever this call would have produced must not be kept.
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await call
        return "lost"
    try:
        outcome = call.result()
    except Exception:
        log.exception("batch %s item %s failed unexpectedly", claimed.batch_public_id, claimed.index)
        outcome = Outcome(error=error_json("INTERNAL_ERROR", "The item failed inside the gateway."))
    return await sync_to_async(finish)(claimed, outcome)


def finish(claimed: Claimed, outcome: Outcome) -> str:
    """Close the item's hold and write its final state in the same transaction."""
    now = timezone.now()
    if outcome.error is None:
        facts = outcome.facts
        assert facts is not None and outcome.result is not None

        def record(_: ledger.Posting) -> None:
            metering.usage_row(
                claimed.request_id, claimed.account.pk, claimed.project_id, claimed.key_id, outcome.cost_nano, facts
            ).save(force_insert=True)
            BatchItem.objects.filter(pk=claimed.item_pk).update(
                state=ItemState.SUCCEEDED,
                result=outcome.result,
                error=None,
                files=outcome.files,
                cost_nano=outcome.cost_nano,
                vendor=outcome.vendor,
                model=outcome.model,
                finished_at=now,
                lease_until=None,
            )
            count(claimed.batch_pk, completed=1, cost_nano=outcome.cost_nano)

        assert claimed.hold is not None
        if ledger.settle(claimed.hold, outcome.cost_nano, also=record):
            return "succeeded"
        for name in outcome.files:
            default_storage.delete(name)
        fail_if_hold_expired(claimed.item_pk, claimed.hold)
        return "lost"
    with transaction.atomic():
        if claimed.hold is None or ledger.release(claimed.hold):
            BatchItem.objects.filter(pk=claimed.item_pk, state__in=UNFINISHED_ITEM_STATES).update(
                state=ItemState.FAILED, error=outcome.error, vendor=outcome.error.get("vendor", ""), finished_at=now
            )
            count(claimed.batch_pk, failed=1)
            return "failed"
    fail_if_hold_expired(claimed.item_pk, claimed.hold)
    return "lost"


def fail_if_hold_expired(item_pk: int, hold: Hold | None) -> None:
    """The hold sweeper closed the hold of an item nobody finished: fail the item, unbilled."""
    if hold is None or not Hold.objects.filter(pk=hold.pk, state=HoldState.EXPIRED).exists():
        return
    with transaction.atomic():
        item = BatchItem.objects.filter(pk=item_pk, state__in=UNFINISHED_ITEM_STATES).first()
        if item and BatchItem.objects.filter(pk=item_pk, state__in=UNFINISHED_ITEM_STATES).update(
            state=ItemState.FAILED,
            error=error_json("HOLD_EXPIRED", "The credit held for this item expired before it finished."),
            finished_at=timezone.now(),
            lease_until=None,
        ):
            count(item.batch_id, failed=1)


def count(batch_pk: int, *, completed: int = 0, failed: int = 0, cancelled: int = 0, cost_nano: int = 0) -> None:
    """Add a finished item to the batch (inside the item's transaction); finish the batch with its last item."""
    Batch.objects.filter(pk=batch_pk).update(
        completed_count=F("completed_count") + completed,
        failed_count=F("failed_count") + failed,
        cancelled_count=F("cancelled_count") + cancelled,
        total_cost_nano=F("total_cost_nano") + cost_nano,
    )
    batch = Batch.objects.select_related("account").get(pk=batch_pk)
    changed = False
    if batch.state in ACTIVE_BATCH_STATES and batch.finished_count >= batch.total_count:
        now = timezone.now()
        final = BatchState.COMPLETED if batch.completed_count or not batch.failed_count else BatchState.FAILED
        changed = bool(
            Batch.objects.filter(pk=batch_pk, state__in=ACTIVE_BATCH_STATES).update(
                state=final, finished_at=now, expires_at=now + timedelta(days=batch.retention_days)
            )
        )
        batch.refresh_from_db()
    announce(batch, force=changed or batch.finished_count >= batch.total_count)


async def work(batch_public_id: str) -> dict[str, int]:
    """A worker's share of a batch: claim and run items one at a time until none is left."""
    owner = worker_name()
    outcomes: Counter[str] = Counter()
    while True:
        claimed = await sync_to_async(claim_next)(batch_public_id, owner)
        if claimed is None:
            return dict(outcomes)
        outcomes[await run_claimed(claimed, owner)] += 1


# --- Live updates -----------------------------------------------------------------------------

_announced: dict[int, float] = {}


def status_event(batch: Batch) -> dict[str, Any]:
    return {
        "batch_id": batch.public_id,
        "state": batch.state,
        "progress": progress(batch),
        "completed_count": batch.completed_count,
        "failed_count": batch.failed_count,
        "total_cost_usd": format_usd(batch.total_cost_nano),
    }


def announce(batch: Batch, *, force: bool = False) -> None:
    """`batch.updated` to the owner's pages after commit: every state change, else throttled."""
    now = time.monotonic()
    if not force and now - _announced.get(batch.pk, 0.0) < ANNOUNCE_INTERVAL:
        return
    if batch.state in ACTIVE_BATCH_STATES:
        _announced[batch.pk] = now
    else:
        _announced.pop(batch.pk, None)
    live.publish(batch.account.public_id, "batch.updated", status_event(batch))


# --- Cancel, timeout, recovery, retention -----------------------------------------------------

CANCELLED_ERROR = error_json("CANCELLED", "The batch was cancelled before this item finished.")
TIMEOUT_ERROR = error_json("BATCH_TIMEOUT", "The batch reached its batch_timeout before this item finished.")
WORKER_LOST_ERROR = error_json("WORKER_LOST", f"The item's worker stopped {MAX_ATTEMPTS} times while running it.")


def close_item(item: BatchItem, state: str, error: dict[str, Any]) -> bool:
    """Release an unfinished item's hold and give it `state`; False if it was finished already."""
    with transaction.atomic():
        if item.hold is not None and not ledger.release(item.hold):
            # Closed by whoever finished the item (same transaction), unless the sweeper expired it.
            if not Hold.objects.filter(pk=item.hold.pk, state=HoldState.EXPIRED).exists():
                return False
        closed = BatchItem.objects.filter(pk=item.pk, state__in=UNFINISHED_ITEM_STATES).update(
            state=state, error=error, finished_at=timezone.now(), lease_until=None
        )
        if closed:
            if state == ItemState.CANCELLED:
                count(item.batch_id, cancelled=1)
            else:
                count(item.batch_id, failed=1)
        return bool(closed)


def close_unfinished(batch: Batch, state: str, error: dict[str, Any]) -> int:
    closed = 0
    for item in batch.items.filter(state__in=UNFINISHED_ITEM_STATES).select_related("hold").order_by("index"):
        closed += close_item(item, state, error)
    return closed


def end_batch(batch: Batch, state: str, error: dict[str, Any] | None = None) -> bool:
    now = timezone.now()
    return bool(
        Batch.objects.filter(pk=batch.pk, state__in=ACTIVE_BATCH_STATES).update(
            state=state, error=error, finished_at=now, expires_at=now + timedelta(days=batch.retention_days)
        )
    )


def cancel(batch: Batch) -> Batch:
    """Idempotent: finished items stay billed; the others are cancelled and their holds released."""
    end_batch(batch, BatchState.CANCELLED)
    batch.refresh_from_db()
    if batch.state == BatchState.CANCELLED:
        close_unfinished(batch, ItemState.CANCELLED, CANCELLED_ERROR)
        batch.refresh_from_db()
        announce(batch, force=True)
    return batch


def fail_timed_out(now: datetime | None = None) -> int:
    """Chore: batches past their deadline fail; their unfinished items fail and are not billed."""
    cutoff = now or timezone.now()
    done = 0
    for batch in Batch.objects.select_related("account").filter(state__in=ACTIVE_BATCH_STATES, deadline_at__lte=cutoff)[
        :100
    ]:
        error = error_json(
            "BATCH_TIMEOUT", f"The batch did not finish within its batch_timeout ({batch.batch_timeout})."
        )
        if end_batch(batch, BatchState.FAILED, error):
            done += 1
        batch.refresh_from_db()
        close_unfinished(batch, ItemState.FAILED, TIMEOUT_ERROR)
        batch.refresh_from_db()
        announce(batch, force=True)
    return done


def has_ready_task(batch_public_id: str) -> bool:
    from django_tasks_db.models import DBTaskResult

    from batches.tasks import run_batch

    return (
        DBTaskResult.objects.ready()
        .filter(task_path=run_batch.module_path, args_kwargs__args__0=batch_public_id)
        .exists()
    )


def recover_stalled(now: datetime | None = None) -> int:
    """Chore: requeue items whose worker died (lease ran out) and make sure someone runs them."""
    cutoff = now or timezone.now()
    done = 0
    stale = BatchItem.objects.filter(state=ItemState.RUNNING, lease_until__lt=cutoff)
    for item in stale.filter(attempts__gte=MAX_ATTEMPTS).select_related("hold")[:500]:
        done += close_item(item, ItemState.FAILED, WORKER_LOST_ERROR)
    done += stale.filter(attempts__lt=MAX_ATTEMPTS).update(state=ItemState.QUEUED, lease_owner="", lease_until=None)
    # Items a finished batch left behind when its cancel or timeout was interrupted.
    for batch in (
        Batch.objects.exclude(state__in=ACTIVE_BATCH_STATES)
        .filter(items__state__in=UNFINISHED_ITEM_STATES)
        .distinct()[:100]
    ):
        reason = (ItemState.CANCELLED, CANCELLED_ERROR) if batch.state == BatchState.CANCELLED else None
        done += close_unfinished(batch, *(reason or (ItemState.FAILED, TIMEOUT_ERROR)))
    # Queued work with nobody on it: no live lease and no task waiting for it.
    waiting = Batch.objects.filter(
        state__in=ACTIVE_BATCH_STATES, deadline_at__gt=cutoff, items__state=ItemState.QUEUED
    ).distinct()[:100]
    for batch in waiting:
        live_lease = batch.items.filter(state=ItemState.RUNNING, lease_until__gte=cutoff).exists()
        if live_lease or has_ready_task(batch.public_id):
            continue
        queued = batch.items.filter(state=ItemState.QUEUED).count()
        done += enqueue_tasks(batch.public_id, queued)
    return done


def set_retention(batch: Batch, days: int) -> Batch:
    expires_at = batch.finished_at + timedelta(days=days) if batch.finished_at else None
    Batch.objects.filter(pk=batch.pk).update(retention_days=days, expires_at=expires_at)
    batch.refresh_from_db()
    return batch


def purge(batch: Batch) -> None:
    """Delete the batch's results and exports, files first (a rerun finishes an interrupted purge)."""
    names = [name for files in batch.items.values_list("files", flat=True) for name in files or []]
    names += list(batch.exports.values_list("file_name", flat=True))
    for name in names:
        default_storage.delete(name)
    with transaction.atomic():
        batch.exports.all().delete()
        batch.items.all().delete()
        Batch.objects.filter(pk=batch.pk).update(purged_at=timezone.now())


def purge_expired(now: datetime | None = None) -> int:
    """Chore: purge finished batches past their retention."""
    cutoff = now or timezone.now()
    expired = (
        Batch.objects.filter(expires_at__lte=cutoff, purged_at__isnull=True)
        .exclude(state__in=ACTIVE_BATCH_STATES)
        .exclude(items__state__in=UNFINISHED_ITEM_STATES)
    )
    done = 0
    for batch in expired[:100]:
        purge(batch)
        done += 1
    return done


# --- Exports ----------------------------------------------------------------------------------

CSV_COLUMNS = [
    "index",
    "conversation_id",
    "capability",
    "state",
    "cost_usd",
    "vendor",
    "model",
    "request_id",
    "result",
    "error",
]


def export_bytes(rows: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                json.dumps(row.get(column), ensure_ascii=False)
                if column in ("result", "error") and row.get(column) is not None
                else row.get(column, "")
                for column in CSV_COLUMNS
            ]
        )
    return buffer.getvalue().encode()


def create_export(batch: Batch, fmt: str, conversation_id: str, metadata: dict[str, Any], base_url: str) -> BatchExport:
    items = batch.items.order_by("index")
    if conversation_id:
        items = items.filter(conversation_id=conversation_id)
    rows = [item_json(item, base_url) for item in items]
    name = stored_files.save(batch.account.public_id, "batch-exports", export_bytes(rows, fmt), fmt)
    return BatchExport.objects.create(
        batch=batch,
        format=fmt,
        conversation_id=conversation_id,
        metadata=metadata,
        file_name=name,
        item_count=len(rows),
    )


def parse_export(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    fmt = body.get("format", "jsonl")
    if fmt not in EXPORT_FORMATS:
        raise field_error("format", f"format must be one of {', '.join(EXPORT_FORMATS)}.")
    conversation_id = body.get("conversation_id") or ""
    if not isinstance(conversation_id, str) or len(conversation_id) > MAX_CONVERSATION_ID:
        raise field_error(
            "conversation_id", f"conversation_id must be a string of at most {MAX_CONVERSATION_ID} characters."
        )
    return fmt, conversation_id, parse_metadata(body)


def export(request: HttpRequest, batch: Batch, body: dict[str, Any]) -> dict[str, Any]:
    """ai.batch.export: the file now (state completed); with an idempotency key, once per key."""
    fmt, conversation_id, metadata = parse_export(body)
    base_url = stored_files.base_url_of(request)
    key = idempotency.explicit_key(request, body, required=False)

    def create() -> tuple[int, dict[str, Any], dict[str, Any]]:
        made = create_export(batch, fmt, conversation_id, metadata, base_url)
        return 200, {"export_id": made.public_id}, {"export_id": made.public_id}

    if key is None:
        _, answer, _ = create()
    else:
        hashed = {**body, "batch_id": batch.public_id}
        _, answer, _ = idempotency.run_once(batch.account, "ai.batch.export", key, hashed, create)
    made = BatchExport.objects.get(batch=batch, public_id=answer["export_id"])
    return export_json(made, base_url)


# --- Answers ----------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def progress(batch: Batch) -> float:
    return round(batch.finished_count / batch.total_count, 4) if batch.total_count else 1.0


def submit_json(batch: Batch, eta: datetime | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "batch_id": batch.public_id,
        "state": batch.state,
        "total_count": batch.total_count,
        "estimated_cost_usd": format_usd(batch.estimated_cost_nano),
        "created_at": iso(batch.created_at),
    }
    if batch.state in ACTIVE_BATCH_STATES:
        answer["estimated_eta"] = iso(min(eta or batch.deadline_at, batch.deadline_at))
    return answer


def status_json(batch: Batch) -> dict[str, Any]:
    answer = {
        "batch_id": batch.public_id,
        "state": batch.state,
        "progress": progress(batch),
        "total_count": batch.total_count,
        "completed_count": batch.completed_count,
        "failed_count": batch.failed_count,
        "cancelled_count": batch.cancelled_count,
        "created_at": iso(batch.created_at),
        "started_at": iso(batch.started_at),
        "finished_at": iso(batch.finished_at),
        "total_cost_usd": format_usd(batch.total_cost_nano),
        "estimated_cost_usd": format_usd(batch.estimated_cost_nano),
        "batch_timeout": batch.batch_timeout,
        "deadline_at": iso(batch.deadline_at),
        "retention_days": batch.retention_days,
        "expires_at": iso(batch.expires_at),
        "results_purged": batch.purged_at is not None,
        "metadata": batch.metadata,
    }
    if batch.error:
        answer["error"] = batch.error
    return answer


def rendered_result(item: BatchItem, base_url: str) -> dict[str, Any] | None:
    """The stored result with signed, expiring URLs for its files."""
    if item.result is None:
        return None
    result = dict(item.result)
    ttl = settings.DOWNLOAD_URL_TTL_SECONDS
    if "images" in result:
        images = []
        for image in result["images"]:
            if "file" in image:
                url, expires_at = stored_files.signed_url(base_url, image["file"], ttl)
                image = {"url": url, "expires_at": expires_at}
            images.append(image)
        result["images"] = images
    if "audio_file" in result:
        url, expires_at = stored_files.signed_url(base_url, result.pop("audio_file"), ttl)
        result["audio_url"], result["expires_at"] = url, expires_at
    return result


def item_json(item: BatchItem, base_url: str) -> dict[str, Any]:
    return {
        "index": item.index,
        "conversation_id": item.conversation_id or None,
        "capability": item.capability,
        "state": item.state,
        "result": rendered_result(item, base_url),
        "error": item.error,
        "cost_usd": format_usd(item.cost_nano),
        "vendor": item.vendor or None,
        "model": item.model or None,
        "request_id": item.request_id,
        "attempts": item.attempts,
        "finished_at": iso(item.finished_at),
    }


def export_json(made: BatchExport, base_url: str) -> dict[str, Any]:
    url, expires_at = stored_files.signed_url(base_url, made.file_name, settings.DOWNLOAD_URL_TTL_SECONDS)
    return {
        "export_id": made.public_id,
        "batch_id": made.batch.public_id,
        "state": "completed",
        "format": made.format,
        "conversation_id": made.conversation_id or None,
        "item_count": made.item_count,
        "metadata": made.metadata,
        "download_url": url,
        "expires_at": expires_at,
        "created_at": iso(made.created_at),
    }


def results_page(request: HttpRequest, batch: Batch) -> dict[str, Any]:
    limit = parse_limit(request)
    after = read_cursor(request, f"results:{batch.public_id}")
    if after is not None and not isinstance(after, int):
        raise field_error("cursor", "cursor is not a next_cursor this API gave out.")
    items = batch.items.order_by("index")
    if after is not None:
        items = items.filter(index__gt=after)
    page = list(items[: limit + 1])
    base_url = stored_files.base_url_of(request)
    answer: dict[str, Any] = {
        "batch_id": batch.public_id,
        "state": batch.state,
        "items": [item_json(item, base_url) for item in page[:limit]],
        "total_count": batch.total_count,
        "next_cursor": make_cursor(f"results:{batch.public_id}", page[limit - 1].index) if len(page) > limit else None,
    }
    latest = batch.exports.filter(conversation_id="").order_by("-created_at", "-id").first()
    if latest is not None:
        answer["download_url"] = export_json(latest, base_url)["download_url"]
    return answer


def list_page(request: HttpRequest, account: Account) -> dict[str, Any]:
    limit = parse_limit(request)
    after = read_cursor(request, f"list:{account.public_id}")
    batches = Batch.objects.select_related("account").filter(account=account).order_by("-created_at", "-id")
    total = batches.count()
    if after is not None:
        if not (isinstance(after, list) and len(after) == 2):
            raise field_error("cursor", "cursor is not a next_cursor this API gave out.")
        created_at = datetime.fromisoformat(after[0])
        batches = batches.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=after[1]))
    page = list(batches[: limit + 1])
    last = page[limit - 1] if len(page) > limit else None
    return {
        "batches": [status_json(batch) for batch in page[:limit]],
        "total_count": total,
        "next_cursor": make_cursor(f"list:{account.public_id}", [last.created_at.isoformat(), last.pk])
        if last
        else None,
    }
