"""Stripe webhooks: verify the signature, store each event once, dispatch it by type.

Stripe delivers an event at least once, sometimes several times at once, and in any order.
So: every event is stored under its unique Stripe id (a repeat only bumps `deliveries`), and
every handler is idempotent on its own: a top-up credit's ledger reference is
`topup:<checkout session id>` (the same for `completed` and `async_payment_succeeded`), and a
refund's is `refund:<charge id>:<cumulative cents refunded>`, debiting only what is new.
A handler that fails answers 5xx, so Stripe delivers the event again later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import ledger
from billing.models import EntryKind, LedgerEntry, StripeEvent, TopUp, TopUpState
from infrai.lib.money import NANO_PER_USD, display_usd

log = logging.getLogger(__name__)

NANO_PER_CENT = NANO_PER_USD // 100
SIGNATURE_TOLERANCE_SECONDS = 300

StripeObject = dict[str, Any]
Handler = Callable[[StripeObject], str]


class RetryLater(Exception):
    """The event cannot be handled yet; answer 5xx so Stripe delivers it again."""


# --- Storing events ----------------------------------------------------------------------------


def record_event(event: dict[str, Any]) -> StripeEvent:
    """The stored row for this event, created on first delivery; repeats count `deliveries`."""
    event_id = str(event["id"])
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(
                event_id=event_id,
                type=str(event.get("type", ""))[:100],
                livemode=bool(event.get("livemode", False)),
                payload=event,
            )
    except IntegrityError:
        StripeEvent.objects.filter(event_id=event_id).update(deliveries=F("deliveries") + 1)
        return StripeEvent.objects.get(event_id=event_id)


# --- Top-ups -----------------------------------------------------------------------------------


def _find_topup(session: StripeObject) -> TopUp | None:
    topup = TopUp.objects.filter(checkout_session_id=session.get("id")).first()
    if topup is None:
        topup_id = session.get("client_reference_id") or (session.get("metadata") or {}).get("topup")
        if topup_id:
            topup = TopUp.objects.filter(public_id=topup_id).first()
    return topup


def credit_session(session: StripeObject) -> str:
    """Credit a paid Checkout Session's amount once, whichever event and however often."""
    session_id = str(session["id"])
    topup = _find_topup(session)
    if topup is None:
        log.warning("Checkout Session %s is not one of our top-ups; ignored", session_id)
        return "ignored: not a top-up of this console"
    currency = str(session.get("currency") or "").lower()
    amount_cents = session.get("amount_total")
    if currency != "usd" or not isinstance(amount_cents, int) or amount_cents <= 0:
        log.error("Top-up %s: session %s paid %r %s; not credited", topup.public_id, session_id, amount_cents, currency)
        return f"not credited: unexpected amount {amount_cents!r} {currency}"
    amount_nano = amount_cents * NANO_PER_CENT
    if amount_nano != topup.amount_nano:
        log.warning(
            "Top-up %s asked %s but session %s paid %s cents",
            topup.public_id,
            topup.amount_nano,
            session_id,
            amount_cents,
        )
    now = timezone.now()
    with transaction.atomic():
        credited = ledger.credit(
            topup.account_id,
            amount_nano,
            EntryKind.TOPUP,
            f"topup:{session_id}",
            memo=f"Stripe top-up {topup.public_id}",
        )
        TopUp.objects.filter(pk=topup.pk, checkout_session_id__isnull=True).update(checkout_session_id=session_id)
        TopUp.objects.filter(pk=topup.pk).exclude(state=TopUpState.PAID).update(
            state=TopUpState.PAID,
            credited_nano=amount_nano,
            payment_intent_id=str(session.get("payment_intent") or ""),
            failure="",
            paid_at=now,
            updated_at=now,
        )
    if credited:
        log.info("Top-up %s credited %s (session %s)", topup.public_id, display_usd(amount_nano), session_id)
        return f"credited {display_usd(amount_nano)}"
    return "already credited"


def on_session_completed(session: StripeObject) -> str:
    status = session.get("payment_status")
    if status == "paid":
        return credit_session(session)
    if status == "unpaid":
        return "awaiting the asynchronous payment"
    return f"ignored: payment_status {status}"


def on_async_payment_succeeded(session: StripeObject) -> str:
    return credit_session(session)


def _close_topup(session: StripeObject, state: str, failure: str) -> str:
    topup = _find_topup(session)
    if topup is None:
        return "ignored: not a top-up of this console"
    changed = TopUp.objects.filter(pk=topup.pk, state=TopUpState.PENDING).update(
        state=state, failure=failure, updated_at=timezone.now()
    )
    return f"top-up {state}" if changed else f"top-up already {topup.state}"


def on_async_payment_failed(session: StripeObject) -> str:
    return _close_topup(session, TopUpState.FAILED, "The payment failed; nothing was credited.")


def on_session_expired(session: StripeObject) -> str:
    return _close_topup(session, TopUpState.EXPIRED, "The checkout expired before it was paid.")


def _topup_for_charge(charge: StripeObject) -> TopUp | None:
    payment_intent = charge.get("payment_intent")
    if payment_intent:
        topup = TopUp.objects.filter(payment_intent_id=payment_intent).first()
        if topup:
            return topup
    topup_id = (charge.get("metadata") or {}).get("topup")
    return TopUp.objects.filter(public_id=topup_id).first() if topup_id else None


def on_charge_refunded(charge: StripeObject) -> str:
    """Take back what was refunded, once: the new part of the charge's cumulative `amount_refunded`."""
    charge_id = str(charge["id"])
    refunded_cents = charge.get("amount_refunded")
    if str(charge.get("currency") or "").lower() != "usd" or not isinstance(refunded_cents, int):
        return "ignored: not a USD refund"
    amount_cents = charge.get("amount")
    if isinstance(amount_cents, int):
        refunded_cents = min(refunded_cents, amount_cents)  # never more than was paid
    found = _topup_for_charge(charge)
    if found is None:
        log.warning("Refunded charge %s belongs to no top-up; ignored", charge_id)
        return "ignored: not a top-up charge"
    prefix = f"refund:{charge_id}:"
    with transaction.atomic():
        # One refund of a charge at a time: concurrent events compute the delta in turn.
        topup = TopUp.objects.select_for_update().get(pk=found.pk)
        taken = -(LedgerEntry.objects.filter(reference__startswith=prefix).aggregate(s=Sum("amount_nano"))["s"] or 0)
        new = refunded_cents * NANO_PER_CENT - taken
        if new <= 0:
            return "refund already counted"
        ledger.debit(
            topup.account_id,
            new,
            EntryKind.REFUND,
            f"{prefix}{refunded_cents}",
            memo=f"Stripe refund of top-up {topup.public_id}",
        )
        TopUp.objects.filter(pk=topup.pk).update(refunded_nano=F("refunded_nano") + new, updated_at=timezone.now())
    log.info("Top-up %s: refund of %s taken back (charge %s)", topup.public_id, display_usd(new), charge_id)
    return f"debited {display_usd(new)}"


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": on_session_completed,
    "checkout.session.async_payment_succeeded": on_async_payment_succeeded,
    "checkout.session.async_payment_failed": on_async_payment_failed,
    "checkout.session.expired": on_session_expired,
    "charge.refunded": on_charge_refunded,
}


# --- The endpoint ------------------------------------------------------------------------------


def _answer(status: int, **body: Any) -> JsonResponse:
    return JsonResponse(body, status=status)


def process(stored: StripeEvent) -> tuple[int, str]:
    """Run the event's handler unless it ran to completion before; (HTTP status, outcome)."""
    if stored.processed_at is not None:
        return 200, f"duplicate: {stored.outcome}"
    handler = HANDLERS.get(stored.type)
    if handler is None:
        outcome = "ignored"
    else:
        try:
            outcome = handler(stored.payload["data"]["object"])
        except RetryLater as exc:
            StripeEvent.objects.filter(pk=stored.pk).update(last_error=str(exc))
            return 503, f"retry later: {exc}"
        except Exception as exc:
            log.exception("Stripe event %s (%s) failed", stored.event_id, stored.type)
            StripeEvent.objects.filter(pk=stored.pk).update(last_error=f"{type(exc).__name__}: {exc}"[:2000])
            return 500, "failed; Stripe will deliver it again"
    StripeEvent.objects.filter(pk=stored.pk, processed_at__isnull=True).update(
        processed_at=timezone.now(), outcome=outcome[:200], last_error=""
    )
    return 200, outcome


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    payload = request.body
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            request.headers.get("Stripe-Signature"),
            settings.STRIPE_WEBHOOK_SECRET,
            SIGNATURE_TOLERANCE_SECONDS,
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        log.warning("Stripe webhook refused: %s", exc)
        return _answer(400, error="invalid Stripe-Signature")
    try:
        event = json.loads(payload)
        if not isinstance(event, dict) or not event.get("id") or not isinstance(event.get("data"), dict):
            raise ValueError("not a Stripe event")
        event["data"]["object"]  # noqa: B018 - every event carries its object
    except (ValueError, KeyError) as exc:
        return _answer(400, error=f"malformed event: {exc}")
    stored = record_event(event)
    status, outcome = process(stored)
    return _answer(status, received=True, id=stored.event_id, type=stored.type, outcome=outcome)
