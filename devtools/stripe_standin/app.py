"""Checkout Sessions on top of localstripe: the API, a hosted payment page and signed webhooks.

localstripe (an aiohttp app) fakes most of Stripe's API but not Checkout. This module builds an
aiohttp app with localstripe's routes plus:

- ``POST /v1/checkout/sessions`` (form-encoded, as the stripe SDK sends it; honours
  ``Idempotency-Key``), ``GET /v1/checkout/sessions[/{id}]``, ``POST .../{id}/expire``;
- ``GET /pay/{id}``: a page labelled "Stripe test mode (local stand-in)" with the amount, a
  Pay button and Cancel; Pay creates a PaymentMethod, PaymentIntent and Charge in localstripe,
  completes the session, delivers a signed ``checkout.session.completed`` and redirects to the
  session's success_url. Further buttons try the asynchronous outcomes and refunds;
- refunds (``POST /v1/refunds`` or the page) deliver ``charge.refunded``.

Webhooks carry a ``Stripe-Signature`` header in Stripe's format (``t=<unix>,v1=<hex
HMAC-SHA256 of "<t>.<body>" with the endpoint secret>``), so ``stripe.Webhook`` verifies them.
The first delivery is awaited before the browser is redirected; failed ones are retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import pickle
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from localstripe import server as ls_server
from localstripe.errors import UserError
from localstripe.resources import Charge, Event, PaymentIntent, PaymentMethod, Refund, Store, StripeObject, store

log = logging.getLogger("stripe_standin")

SESSION_TTL_SECONDS = 24 * 3600
TEST_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
RETRY_DELAYS_SECONDS = (1, 2, 5, 10, 30, 60)
ASYNC_OUTCOME_DELAY_SECONDS = 2.0
SESSION_PARAMS = {
    "mode",
    "line_items",
    "success_url",
    "cancel_url",
    "client_reference_id",
    "metadata",
    "customer_email",
    "payment_intent_data",
    "payment_method_types",
    "expand",
}


@dataclass(frozen=True)
class Config:
    webhook_url: str
    webhook_secret: str
    public_url: str
    state_file: Path | None = None
    delivery_timeout: float = 10.0


CONFIG = web.AppKey("config", Config)


# --- Money and signatures ----------------------------------------------------------------------


def format_cents(cents: int, currency: str = "usd") -> str:
    """12345 -> "$123.45" (integers only; no float ever touches an amount)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    symbol = "$" if currency.lower() == "usd" else f"{currency.upper()} "
    return f"{sign}{symbol}{whole:,}.{frac:02d}"


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for `payload`, exactly as Stripe computes it."""
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode("utf-8"), f"{stamp}.".encode() + payload, hashlib.sha256)
    return f"t={stamp},v1={mac.hexdigest()}"


# --- Checkout Sessions -------------------------------------------------------------------------


def _int(value: object, name: str, minimum: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise UserError(400, f"Invalid integer: {name}") from None
    if number < minimum:
        raise UserError(400, f"{name} must be at least {minimum}")
    return number


def _str_dict(value: object, name: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UserError(400, f"Invalid object: {name}")
    return dict(value)


class CheckoutSession(StripeObject):
    """A `checkout.session` in mode=payment with inline `price_data` line items.

    Public attributes are exported as the API object; everything else starts with "_"
    (localstripe exports every public attribute, methods included).
    """

    object = "checkout.session"
    _id_prefix = "cs_test_"

    def __init__(self, public_url: str, **params: Any) -> None:
        unknown = set(params) - SESSION_PARAMS
        if unknown:
            raise UserError(400, f"Received unknown parameter: {sorted(unknown)[0]}")
        if params.get("mode") != "payment":
            raise UserError(400, "The stand-in supports mode=payment only")
        success_url = params.get("success_url")
        if not isinstance(success_url, str) or not success_url.startswith(("http://", "https://")):
            raise UserError(400, "Missing required param: success_url")
        cancel_url = params.get("cancel_url")
        if cancel_url is not None and (not isinstance(cancel_url, str) or not cancel_url.startswith("http")):
            raise UserError(400, "Invalid URL: cancel_url")
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise UserError(400, "Missing required param: line_items")
        lines: list[dict[str, Any]] = []
        for n, item in enumerate(items):
            price = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(price, dict):
                raise UserError(400, f"line_items[{n}][price_data] is required by the stand-in")
            product = price.get("product_data") or {}
            if not isinstance(product, dict) or not product.get("name"):
                raise UserError(400, f"Missing required param: line_items[{n}][price_data][product_data][name]")
            lines.append(
                {
                    "quantity": _int(item.get("quantity", 1), f"line_items[{n}][quantity]", 1),
                    "currency": str(price.get("currency") or "").lower(),
                    "unit_amount": _int(price.get("unit_amount"), f"line_items[{n}][price_data][unit_amount]", 1),
                    "name": str(product["name"]),
                    "description": str(product.get("description") or ""),
                }
            )
        currencies = {line["currency"] for line in lines}
        if len(currencies) != 1 or "" in currencies:
            raise UserError(400, "All line items need the same currency")
        metadata = _str_dict(params.get("metadata"), "metadata")
        intent_data = params.get("payment_intent_data") or {}
        intent_metadata = _str_dict(intent_data.get("metadata") if isinstance(intent_data, dict) else None, "pi")

        super().__init__()  # all validation first: this stores the object

        self.mode = "payment"
        self.status = "open"
        self.payment_status = "unpaid"
        self.currency = currencies.pop()
        self.amount_subtotal = sum(line["unit_amount"] * line["quantity"] for line in lines)
        self.amount_total = self.amount_subtotal
        self.client_reference_id = params.get("client_reference_id")
        self.customer_email = params.get("customer_email")
        self.metadata = metadata
        self.success_url = success_url
        self.cancel_url = cancel_url
        self.payment_intent: str | None = None
        self.payment_method_types = params.get("payment_method_types") or ["card"]
        self.expires_at = self.created + SESSION_TTL_SECONDS
        self.url = f"{public_url.rstrip('/')}/pay/{self.id}"
        self._lines = lines
        self._intent_metadata = intent_metadata
        self._pay_token = secrets.token_urlsafe(16)

    def _return_url(self, url: str | None) -> str:
        return (url or self.success_url).replace("{CHECKOUT_SESSION_ID}", self.id)

    def _charge(self) -> PaymentIntent:
        """Pay with the test card: a PaymentMethod, a confirmed PaymentIntent and its Charge."""
        method = PaymentMethod(type="card", card=dict(TEST_CARD), billing_details={"email": self.customer_email})
        intent = PaymentIntent(
            amount=self.amount_total,
            currency=self.currency,
            payment_method=method.id,
            metadata=dict(self._intent_metadata),
        )
        intent._confirm(on_failure_now=intent._report_failure)
        charge = intent.latest_charge
        charge.metadata = dict(self._intent_metadata)
        charge.description = self._lines[0]["name"]
        self.payment_intent = intent.id
        self.payment_status = "paid"
        return intent


def _session(session_id: str) -> CheckoutSession:
    found = CheckoutSession._api_retrieve(session_id)
    assert isinstance(found, CheckoutSession)
    return found


# --- Webhook delivery --------------------------------------------------------------------------


class Delivery:
    """Sends events to the console's webhook endpoint, signed, retrying failures for a while."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    async def attempt(self, event: Event) -> bool:
        payload = json.dumps(event._export(), indent=2, sort_keys=True).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature_header(payload, self.secret),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks; local stand-in)",
        }
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as client:
                async with client.post(self.url, data=payload, headers=headers) as response:
                    body = (await response.text())[:300]
                    ok = 200 <= response.status < 300
                    log.info("webhook %s %s -> %s %s", event.type, event.id, response.status, body.strip())
                    return ok
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("webhook %s %s to %s failed: %r", event.type, event.id, self.url, exc)
            return False

    async def deliver(self, event: Event) -> bool:
        """One attempt now; on failure keep retrying in the background. True if it landed."""
        if await self.attempt(event):
            return True
        self.later(event)
        return False

    def later(self, event: Event, first_delay: float = 0.0) -> None:
        task = asyncio.ensure_future(self._retry(event, first_delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry(self, event: Event, first_delay: float) -> None:
        if first_delay:
            await asyncio.sleep(first_delay)
            if await self.attempt(event):
                return
        for delay in RETRY_DELAYS_SECONDS:
            await asyncio.sleep(delay)
            if await self.attempt(event):
                return
        log.error("webhook %s %s given up after %d retries", event.type, event.id, len(RETRY_DELAYS_SECONDS))


DELIVERY = web.AppKey("delivery", Delivery)

# The refund API (localstripe's POST /v1/refunds) has no app at hand, so the running app's
# Delivery is kept here for the hook below.
_ACTIVE: dict[str, Delivery] = {}
_original_refund_create = Refund._api_create


def _refund_and_notify(cls: type[Refund], **data: Any) -> Refund:
    """localstripe's refund create, made to behave like Stripe, then `charge.refunded` sent.

    localstripe refunds the charge's whole amount when none is given, even after a partial
    refund, and accepts refunds beyond what is left; Stripe refunds the rest and refuses more.
    """
    charge_id = data.get("charge")
    if not charge_id and data.get("payment_intent"):
        latest = PaymentIntent._api_retrieve(str(data["payment_intent"])).latest_charge
        charge_id = latest.id if latest is not None else None
    if charge_id:
        charge = Charge._api_retrieve(str(charge_id))
        remaining = charge.amount - charge.amount_refunded
        if remaining <= 0:
            raise UserError(400, f"Charge {charge.id} has already been refunded.", {"code": "charge_already_refunded"})
        if data.get("amount") in (None, ""):
            data["amount"] = remaining
        elif _int(data["amount"], "amount", 1) > remaining:
            raise UserError(
                400,
                f"Refund amount ({format_cents(_int(data['amount'], 'amount', 1))}) is greater than unrefunded "
                f"amount on charge ({format_cents(remaining)})",
            )
    refund = _original_refund_create(**data)
    delivery = _ACTIVE.get("delivery")
    if delivery is not None:
        delivery.later(Event("charge.refunded", Charge._api_retrieve(refund.charge)))
    return refund


# --- API handlers ------------------------------------------------------------------------------


def _json(obj: Any, status: int = 200) -> web.Response:
    return ls_server.json_response(obj, status=status)


async def create_session(request: web.Request) -> web.Response:
    data = await ls_server.get_post_data(request) or {}
    expand = data.pop("expand", None)
    config = request.app[CONFIG]
    key = request.headers.get("Idempotency-Key")
    replays: dict[str, str] = request.app[REPLAYS]
    if key and key in replays:
        return _json(_session(replays[key])._export(expand=expand))
    session = CheckoutSession(config.public_url, **data)
    if key:
        replays[key] = session.id
    log.info("session %s: %s for %s", session.id, format_cents(session.amount_total), session.client_reference_id)
    return _json(session._export(expand=expand))


async def retrieve_session(request: web.Request) -> web.Response:
    return _json(_session(request.match_info["id"])._export())


async def list_sessions(request: web.Request) -> web.Response:
    query = ls_server.unflatten_data(request.query)
    listing = CheckoutSession._api_list_all("/v1/checkout/sessions", limit=query.get("limit"))
    listing._list.sort(key=lambda s: s.created, reverse=True)
    return _json(listing._export())


async def expire_session(request: web.Request) -> web.Response:
    session = _session(request.match_info["id"])
    if session.status != "open":
        raise UserError(400, f"Only open sessions can be expired; this one is {session.status}")
    session.status = "expired"
    request.app[DELIVERY].later(Event("checkout.session.expired", session))
    return _json(session._export())


async def health(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return _json({"ok": True, "webhook_url": config.webhook_url})


# --- The hosted payment page -------------------------------------------------------------------

PAGE_CSS = """
body { margin: 0; font: 15px/1.5 system-ui, sans-serif; background: #f6f7fb; color: #17181c; }
.banner { background: #9a6700; color: #fff; padding: 8px 16px; font-weight: 600; text-align: center; }
main { max-width: 440px; margin: 40px auto; background: #fff; border: 1px solid #e3e5ee; border-radius: 10px; padding: 24px; }
.amount { font-size: 34px; font-weight: 700; margin: 6px 0; }
.muted { color: #62667a; font-size: 13px; }
button, .link { font: inherit; padding: 10px 16px; border-radius: 8px; border: 1px solid #e3e5ee; background: #fff; cursor: pointer; }
button.pay { background: #635bff; border-color: #635bff; color: #fff; width: 100%; font-weight: 600; margin: 12px 0 8px; }
.link { display: inline-block; text-decoration: none; color: #17181c; }
details { margin-top: 18px; } details form { display: inline; }
.status { padding: 8px 10px; border-radius: 8px; background: #ecfdf3; color: #0f7a4a; }
input { font: inherit; padding: 8px; border: 1px solid #e3e5ee; border-radius: 8px; width: 120px; }
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        content_type="text/html",
        text=(
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{PAGE_CSS}</style></head>"
            "<body><div class='banner' role='note'>Stripe test mode (local stand-in): no real money moves</div>"
            f"<main>{body}</main></body></html>"
        ),
    )


def _form(session: CheckoutSession, action: str, label: str, css: str = "", extra: str = "") -> str:
    return (
        f"<form method='post' action='/pay/{session.id}'>"
        f"<input type='hidden' name='token' value='{session._pay_token}'>{extra}"
        f"<button class='{css}' type='submit' name='action' value='{action}'>{html.escape(label)}</button></form>"
    )


def _pay_page(session: CheckoutSession) -> str:
    e = html.escape
    amount = format_cents(session.amount_total, session.currency)
    lines = "".join(
        f"<li>{e(line['name'])}{' — ' + e(line['description']) if line['description'] else ''}"
        f" × {line['quantity']}</li>"
        for line in session._lines
    )
    head = (
        f"<h1>{e(session._lines[0]['name'])}</h1><p class='amount' data-testid='amount'>{amount}"
        f" <span class='muted'>{e(session.currency.upper())}</span></p><ul class='muted'>{lines}</ul>"
        + (f"<p class='muted'>Paying as {e(session.customer_email)}</p>" if session.customer_email else "")
    )
    if session.status == "open":
        cancel = f"<a class='link' href='{e(session.cancel_url)}'>Cancel</a>" if session.cancel_url else ""
        return (
            head
            + _form(session, "pay", f"Pay {amount}", "pay")
            + cancel
            + "<p class='muted'>Test card 4242 4242 4242 4242 is used; nothing is charged.</p>"
            + "<details><summary>Other test outcomes</summary>"
            + "<p class='muted'>A delayed payment method (like a bank debit): the session completes unpaid,"
            + f" then succeeds or fails {ASYNC_OUTCOME_DELAY_SECONDS:g} s later.</p>"
            + _form(session, "async_succeeded", "Delayed payment that succeeds")
            + " "
            + _form(session, "async_failed", "Delayed payment that fails")
            + "</details>"
        )
    state = (
        f"<p class='status' data-testid='status'>Session {e(session.status)}, payment {e(session.payment_status)}.</p>"
    )
    back = f"<p><a class='link' href='{e(session._return_url(None))}'>Return to the merchant</a></p>"
    refund = ""
    if session.payment_status == "paid" and session.payment_intent:
        refund = (
            "<details><summary>Refund (test)</summary><p class='muted'>Sends charge.refunded to the console."
            " Leave the amount empty to refund the rest.</p>"
            + _form(
                session,
                "refund",
                "Refund",
                extra="<label>Amount in cents <input name='amount' inputmode='numeric'></label> ",
            )
            + "</details>"
        )
    return head + state + back + refund


async def pay_page(request: web.Request) -> web.Response:
    try:
        session = _session(request.match_info["id"])
    except UserError:
        return _page("Not found", "<h1>No such checkout session</h1>", status=404)
    return _page(f"Pay {format_cents(session.amount_total, session.currency)}", _pay_page(session))


async def pay_action(request: web.Request) -> web.StreamResponse:
    try:
        session = _session(request.match_info["id"])
    except UserError:
        return _page("Not found", "<h1>No such checkout session</h1>", status=404)
    form = await request.post()
    if not hmac.compare_digest(str(form.get("token", "")), session._pay_token):
        return _page("Refused", "<h1>This form has expired</h1><p>Reload the payment page.</p>", status=403)
    action = str(form.get("action", ""))
    delivery = request.app[DELIVERY]
    if action == "refund":
        return await _refund(session, str(form.get("amount", "")).strip())
    if session.status != "open":
        return _page("Already done", _pay_page(session), status=409)
    if action == "pay":
        session._charge()
        session.status = "complete"
        await delivery.deliver(Event("checkout.session.completed", session))
    elif action in ("async_succeeded", "async_failed"):
        session.status = "complete"
        await delivery.deliver(Event("checkout.session.completed", session))
        task = asyncio.ensure_future(_async_outcome(session, delivery, succeeded=action == "async_succeeded"))
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
    else:
        return _page("Refused", "<h1>Unknown action</h1>", status=400)
    raise web.HTTPSeeOther(session._return_url(None))


async def _async_outcome(session: CheckoutSession, delivery: Delivery, *, succeeded: bool) -> None:
    await asyncio.sleep(ASYNC_OUTCOME_DELAY_SECONDS)
    if succeeded:
        session._charge()
        await delivery.deliver(Event("checkout.session.async_payment_succeeded", session))
    else:
        await delivery.deliver(Event("checkout.session.async_payment_failed", session))
    store.dump_to_disk()


async def _refund(session: CheckoutSession, amount: str) -> web.Response:
    if session.payment_status != "paid" or not session.payment_intent:
        return _page("Refused", "<h1>Nothing to refund</h1>", status=400)
    params: dict[str, Any] = {"payment_intent": session.payment_intent}
    if amount:
        params["amount"] = amount
    try:
        Refund._api_create(**params)
    except UserError as exc:
        return _page("Refused", f"<h1>Refund refused</h1><p>{html.escape(json.dumps(exc.body))}</p>", status=400)
    raise web.HTTPSeeOther(f"/pay/{session.id}")


# --- The app -----------------------------------------------------------------------------------

REPLAYS = web.AppKey("replays", dict)
TASKS = web.AppKey("tasks", set)
PUBLIC_PREFIXES = ("/pay/", "/_standin/")


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """localstripe's API-key check, except for the browser's payment page and the health check."""
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    return await ls_server.auth_middleware(request, handler)


def _use_state_file(path: Path | None) -> None:
    """Keep localstripe's objects in `path` (or only in memory), not in the shared /tmp file."""

    def dump(self: Store) -> None:
        if path is not None:
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(path)

    def load(self: Store) -> None:
        if path is not None and path.exists():
            try:
                with path.open("rb") as f:
                    saved = pickle.load(f)  # noqa: S301 - our own file, written just above
            except Exception as exc:  # a stale file from another version: start afresh
                log.warning("ignoring unreadable state file %s: %r", path, exc)
                return
            self.clear()
            self.update(saved)

    Store.dump_to_disk = dump  # type: ignore[method-assign]
    Store.try_load_from_disk = load  # type: ignore[method-assign]


def build_app(config: Config) -> web.Application:
    _use_state_file(config.state_file)
    store.try_load_from_disk()
    delivery = Delivery(config.webhook_url, config.webhook_secret, config.delivery_timeout)
    _ACTIVE["delivery"] = delivery
    Refund._api_create = classmethod(_refund_and_notify)  # type: ignore[method-assign,assignment]

    app = web.Application(middlewares=[ls_server.error_middleware, auth_middleware, ls_server.save_store_middleware])
    app.on_response_prepare.append(ls_server.add_cors_headers)
    app[CONFIG] = config
    app[DELIVERY] = delivery
    app[REPLAYS] = {}
    app[TASKS] = set()
    app.router.add_get("/_standin/health", health)
    app.router.add_post("/v1/checkout/sessions", create_session)
    app.router.add_get("/v1/checkout/sessions", list_sessions)
    app.router.add_get("/v1/checkout/sessions/{id}", retrieve_session)
    app.router.add_post("/v1/checkout/sessions/{id}/expire", expire_session)
    app.router.add_get("/pay/{id}", pay_page)
    app.router.add_post("/pay/{id}", pay_action)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # localstripe's handlers are plain functions
        for route in ls_server.app.router.routes():
            app.router.add_route(route.method, route.resource.canonical, route.handler)
    return app
