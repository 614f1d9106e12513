"""Buying credit with Stripe Checkout: validate the amount, record a TopUp, create the session.

The credit itself is posted only by the webhook (billing/webhooks.py) once Stripe confirms the
payment; nothing here touches the ledger. Stripe is called outside any database transaction so
a slow or failing Stripe never holds a lock or a connection's transaction open.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation

import stripe
from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from billing.models import TopUp, TopUpState
from console.models import Account
from infrai.lib.money import display_usd, usd_to_nano

log = logging.getLogger(__name__)

AMOUNT_FIELD = "amount_usd"
CENTS = Decimal("0.01")
DEFAULT_RETURN_PATH = "/billing/"
STRIPE_TIMEOUT_SECONDS = 20
_DECIMAL_TEXT = re.compile(r"^\d+(\.\d+)?$")


class TopUpError(ValueError):
    """Bad top-up input; `field` names the offending field for forms and API errors."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    @property
    def form_message(self) -> str:
        """The message for a console form, where the field is labelled, not named as in the API."""
        return self.message.replace(f"{self.field} ", "The amount ", 1)


class TopUpUnavailable(RuntimeError):
    """Stripe could not create the Checkout Session; nothing was charged."""


def parse_amount(raw: object) -> Decimal:
    """A top-up amount in USD from a form or JSON value, within the configured bounds.

    Accepts decimal strings ("25", "25.50"), integers, Decimals and JSON numbers (floats are
    converted through ``str()`` so 10.1 means "10.1", never 10.0999...). At most 2 decimals.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise TopUpError(AMOUNT_FIELD, "Enter an amount in USD (amount_usd).")
    if isinstance(raw, bool):
        raise TopUpError(AMOUNT_FIELD, 'amount_usd must be a number of US dollars such as 25 or "25.00".')
    value: Decimal
    try:
        if isinstance(raw, Decimal):
            value = raw
        elif isinstance(raw, int):
            value = Decimal(raw)
        elif isinstance(raw, float):
            value = Decimal(str(raw))
        elif isinstance(raw, str) and _DECIMAL_TEXT.match(raw.strip().removeprefix("$")):
            value = Decimal(raw.strip().removeprefix("$"))
        else:
            raise TopUpError(AMOUNT_FIELD, 'amount_usd must be a number of US dollars such as 25 or "25.00".')
    except InvalidOperation as exc:
        raise TopUpError(AMOUNT_FIELD, 'amount_usd must be a number of US dollars such as 25 or "25.00".') from exc
    if not value.is_finite():
        raise TopUpError(AMOUNT_FIELD, "amount_usd must be a finite number of US dollars.")
    # Bounds first: quantizing an absurdly large amount would overflow the decimal context.
    low, high = Decimal(settings.TOPUP_MIN_USD), Decimal(settings.TOPUP_MAX_USD)
    if not low <= value <= high:
        raise TopUpError(
            AMOUNT_FIELD,
            f"amount_usd must be between {display_usd(usd_to_nano(low))} and {display_usd(usd_to_nano(high))}.",
        )
    if value != value.quantize(CENTS):
        raise TopUpError(AMOUNT_FIELD, "amount_usd can have at most 2 decimals (whole cents).")
    return value.quantize(CENTS)


def safe_return_path(candidate: object, default: str = DEFAULT_RETURN_PATH) -> str:
    """`candidate` if it is a path on this site (never another host or scheme), else `default`."""
    if not isinstance(candidate, str) or not candidate.startswith("/") or len(candidate) > 500:
        return default
    if not url_has_allowed_host_and_scheme(candidate, allowed_hosts=None):
        return default
    return candidate


def stripe_client() -> stripe.StripeClient:
    """A client for settings.STRIPE_SECRET_KEY, at STRIPE_API_BASE when set (the local stand-in)."""
    base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=2,
        http_client=stripe.RequestsClient(timeout=STRIPE_TIMEOUT_SECONDS),
    )


def _assert_outside_transaction() -> None:
    # A test case's own wrapping transaction is fine; any other atomic block is a bug.
    if any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks):
        raise RuntimeError("Stripe must not be called inside a database transaction")


def _console_url(base_url: str, name: str, topup: TopUp) -> str:
    return base_url.rstrip("/") + reverse(name, args=[topup.public_id])


def start_topup(
    account: Account, amount_usd: Decimal, return_path: str, base_url: str, *, origin: str = "console"
) -> str:
    """Create a Stripe Checkout Session for `amount_usd` and return its URL.

    Records a pending TopUp first (committed before Stripe is called, so the webhook can always
    find it by its id), then creates the session with the top-up id as client_reference_id and
    metadata, and success/cancel pages that lead back to `return_path`.
    Raises TopUpError for a bad amount and TopUpUnavailable when Stripe fails.
    """
    amount = parse_amount(amount_usd)
    _assert_outside_transaction()
    with transaction.atomic(durable=True):
        topup = TopUp.objects.create(
            account=account,
            amount_nano=usd_to_nano(amount),
            return_path=safe_return_path(return_path),
            origin=origin,
        )
    metadata = {"account": account.public_id, "topup": topup.public_id}
    success_url = _console_url(base_url, "billing:topup_success", topup) + "?session_id={CHECKOUT_SESSION_ID}"
    cancel_url = _console_url(base_url, "billing:topup_cancel", topup)
    params = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": int(amount * 100),
                    "product_data": {
                        "name": "Infrai credit",
                        "description": f"{display_usd(topup.amount_nano)} of API credit",
                    },
                },
            }
        ],
        "client_reference_id": topup.public_id,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "customer_email": account.owner.email,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    try:
        session = stripe_client().v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]
            {"idempotency_key": f"checkout:{topup.public_id}"},
        )
    except stripe.StripeError as exc:
        log.warning("Stripe refused or failed to create a Checkout Session for %s: %s", topup.public_id, exc)
        TopUp.objects.filter(pk=topup.pk, state=TopUpState.PENDING).update(
            state=TopUpState.FAILED, failure=f"Checkout could not start: {exc}"[:300], updated_at=timezone.now()
        )
        raise TopUpUnavailable("Stripe could not start the payment; nothing was charged. Try again shortly.") from exc
    url = str(session.url or "")
    TopUp.objects.filter(pk=topup.pk).update(
        checkout_session_id=session.id, checkout_url=url, updated_at=timezone.now()
    )
    log.info("Top-up %s: Checkout Session %s for %s", topup.public_id, session.id, display_usd(topup.amount_nano))
    return url


def abandon_topup(topup: TopUp) -> None:
    """The user cancelled on Stripe's page: expire the session so it can no longer be paid.

    Best effort: Stripe's `checkout.session.expired` webhook records the outcome either way;
    a session already paid cannot be expired and keeps its credit."""
    if topup.state != TopUpState.PENDING or not topup.checkout_session_id:
        return
    try:
        stripe_client().v1.checkout.sessions.expire(topup.checkout_session_id)
    except stripe.StripeError:
        log.warning("could not expire checkout session %s", topup.checkout_session_id, exc_info=True)
        return
    TopUp.objects.filter(pk=topup.pk, state=TopUpState.PENDING).update(
        state=TopUpState.EXPIRED, updated_at=timezone.now()
    )
    topup.refresh_from_db()
