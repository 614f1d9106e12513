"""The local Stripe stand-in, run as `python -m devtools.stripe_standin` in a subprocess.

The SDK talks to it exactly as to Stripe; paying on its page sends a really signed webhook.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stripe
from django.conf import settings as django_settings
from django.test import Client

from billing import ledger
from billing.models import EntryKind, LedgerEntry, StripeEvent, TopUp, TopUpState
from billing.stripe_checkout import start_topup, stripe_client
from devtools.stripe_standin.runner import PROJECT_DIR, free_port, running_standin
from infrai import devserver
from tests.factories import make_account, signed_in_client

USD = 1_000_000_000
SECRET = "whsec_standin_test_secret"


class Receiver:
    """A tiny HTTP server that records every POST it gets (a stand-in for the console)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.received.append((dict(self.headers), body))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"received": true}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, type_: str, count: int = 1, timeout: float = 10) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                found = [(h, b) for h, b in self.received if json.loads(b)["type"] == type_]
                if len(found) >= count or time.monotonic() > deadline:
                    return found
                self.arrived.wait(0.2)


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def standin_url(receiver):
    with running_standin(receiver.url, SECRET) as url:
        yield url


@pytest.fixture
def standin(settings, standin_url):
    settings.STRIPE_API_BASE = standin_url
    return standin_url


def pay_form(page: str) -> dict[str, str]:
    return {"token": re.search(r"name='token' value='([^']+)'", page).group(1)}


# --- With a local receiver ---------------------------------------------------------------------


@pytest.mark.django_db
def test_paying_on_the_page_sends_a_signed_completed_event_and_returns_to_the_console(standin, receiver):
    account = make_account()
    url = start_topup(account, Decimal("10.50"), "/billing/", "http://console.test")
    topup = TopUp.objects.get()
    page = httpx.get(url)
    assert page.status_code == 200
    text = page.text
    assert "Stripe test mode (local stand-in)" in text
    assert "data-testid='amount'>$10.50" in text
    assert "Pay $10.50</button>" in text
    assert f"href='http://console.test/billing/topup/{topup.public_id}/cancel/'>Cancel</a>" in text

    paid = httpx.post(url, data={**pay_form(text), "action": "pay"})
    assert paid.status_code == 303
    assert paid.headers["location"] == (
        f"http://console.test/billing/topup/{topup.public_id}/success/?session_id={topup.checkout_session_id}"
    )
    deliveries = receiver.events("checkout.session.completed")
    mine = [(h, b) for h, b in deliveries if json.loads(b)["data"]["object"]["id"] == topup.checkout_session_id]
    assert len(mine) == 1
    headers, body = mine[0]
    # A real Stripe-format signature: the SDK's verifier accepts it with the secret, and only with it.
    stripe.WebhookSignature.verify_header(body.decode(), headers["Stripe-Signature"], SECRET, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body.decode(), headers["Stripe-Signature"], "whsec_wrong", tolerance=300)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", headers["Stripe-Signature"])
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], SECRET)
    session = event.data.object
    assert (event.type, session.payment_status, session.status, session.amount_total) == (
        "checkout.session.completed",
        "paid",
        "complete",
        1050,
    )
    assert session.client_reference_id == topup.public_id
    assert session.metadata.to_dict() == {"account": account.public_id, "topup": topup.public_id}
    intent = stripe_client().v1.payment_intents.retrieve(session.payment_intent)
    assert (intent.status, intent.amount, intent.metadata.to_dict()["topup"]) == ("succeeded", 1050, topup.public_id)


@pytest.mark.django_db
def test_a_session_is_paid_once_and_a_forged_form_is_refused(standin, receiver):
    account = make_account()
    url = start_topup(account, Decimal("5"), "/billing/", "http://console.test")
    session_id = TopUp.objects.get().checkout_session_id
    text = httpx.get(url).text
    assert httpx.post(url, data={"token": "forged", "action": "pay"}).status_code == 403
    assert stripe_client().v1.checkout.sessions.retrieve(session_id).status == "open"
    assert httpx.post(url, data={**pay_form(text), "action": "pay"}).status_code == 303
    again = httpx.post(url, data={**pay_form(text), "action": "pay"})
    assert again.status_code == 409
    assert "Session complete, payment paid." in again.text
    time.sleep(0.5)
    sent = [
        b
        for _, b in receiver.events("checkout.session.completed", count=99, timeout=0)
        if json.loads(b)["data"]["object"]["id"] == session_id
    ]
    assert len(sent) == 1


@pytest.mark.django_db
def test_refunds_send_charge_refunded_with_the_cumulative_amount_like_stripe(standin, receiver):
    account = make_account()
    url = start_topup(account, Decimal("10.50"), "/billing/", "http://console.test")
    httpx.post(url, data={**pay_form(httpx.get(url).text), "action": "pay"})
    intent = stripe_client().v1.checkout.sessions.retrieve(TopUp.objects.get().checkout_session_id).payment_intent
    client = stripe_client()
    assert client.v1.refunds.create({"payment_intent": intent, "amount": 300}).amount == 300
    with pytest.raises(stripe.InvalidRequestError, match=r"greater than unrefunded amount on charge \(\$7.50\)"):
        client.v1.refunds.create({"payment_intent": intent, "amount": 751})
    assert client.v1.refunds.create({"payment_intent": intent}).amount == 750, "the rest, not the whole charge"
    with pytest.raises(stripe.InvalidRequestError, match="has already been refunded"):
        client.v1.refunds.create({"payment_intent": intent})
    mine = [
        json.loads(b)["data"]["object"]
        for h, b in receiver.events("charge.refunded", count=2)
        if json.loads(b)["data"]["object"]["payment_intent"] == intent
    ]
    assert sorted(c["amount_refunded"] for c in mine) == [300, 1050]
    assert all(c["metadata"]["topup"] == TopUp.objects.get().public_id for c in mine)


def test_the_stand_in_refuses_calls_without_a_secret_key_and_unknown_parameters(standin_url):
    assert httpx.post(f"{standin_url}/v1/checkout/sessions", data={"mode": "payment"}).status_code == 401
    client = stripe.StripeClient("sk_test_standin", base_addresses={"api": standin_url})
    with pytest.raises(stripe.InvalidRequestError, match="mode=payment only"):
        client.v1.checkout.sessions.create({"mode": "subscription", "success_url": "http://x/"})
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: bogus"):
        client.v1.checkout.sessions.create({"mode": "payment", "bogus": "1"})  # type: ignore[typeddict-unknown-key]
    assert httpx.get(f"{standin_url}/pay/cs_test_nope").status_code == 404


def test_a_retried_create_with_the_same_idempotency_key_returns_the_same_session(standin_url):
    client = stripe.StripeClient("sk_test_standin", base_addresses={"api": standin_url})
    params = {
        "mode": "payment",
        "success_url": "http://x/ok",
        "line_items": [
            {"quantity": 2, "price_data": {"currency": "usd", "unit_amount": 700, "product_data": {"name": "Credit"}}}
        ],
    }
    first = client.v1.checkout.sessions.create(params, {"idempotency_key": "same-key"})
    second = client.v1.checkout.sessions.create(params, {"idempotency_key": "same-key"})
    third = client.v1.checkout.sessions.create(params, {"idempotency_key": "other-key"})
    assert first.id == second.id != third.id
    assert first.amount_total == 1400


# --- End to end with the console (live_server) -------------------------------------------------


@pytest.fixture
def console_standin(live_server, settings):
    """A stand-in of its own whose webhooks go to this test's live console."""
    with running_standin(f"{live_server.url}/billing/stripe/webhook/", django_settings.STRIPE_WEBHOOK_SECRET) as url:
        settings.STRIPE_API_BASE = url
        yield url


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.django_db(transaction=True)
def test_paying_credits_exactly_the_amount_and_refunds_take_it_back(live_server, console_standin):
    account = make_account(credit_nano=USD)
    before = ledger.get_balance(account).balance_nano
    url = start_topup(account, Decimal("12.34"), "/keys/", live_server.url)
    topup = TopUp.objects.get()
    text = httpx.get(url).text
    paid = httpx.post(url, data={**pay_form(text), "action": "pay"})
    assert paid.status_code == 303
    # The stand-in delivers the webhook before redirecting, so the credit is there on return.
    assert ledger.get_balance(account).balance_nano == before + 12_340_000_000
    topup.refresh_from_db()
    assert topup.state == TopUpState.PAID
    assert LedgerEntry.objects.get(kind=EntryKind.TOPUP).reference == f"topup:{topup.checkout_session_id}"
    event = StripeEvent.objects.get(type="checkout.session.completed")
    assert event.outcome == "credited $12.34"

    success_path = paid.headers["location"].removeprefix(live_server.url)
    page = signed_in_client(account).get(success_path).content.decode()
    assert "Payment confirmed: $12.34 was added to your balance." in page
    assert re.search(r'data-testid="balance">\$13.34<', page)
    assert 'href="/keys/">Continue where you were</a>' in page

    client = stripe_client()
    client.v1.refunds.create({"payment_intent": topup.payment_intent_id, "amount": 234})
    assert wait_for(lambda: ledger.get_balance(account).balance_nano == before + 10 * USD), "partial refund"
    client.v1.refunds.create({"payment_intent": topup.payment_intent_id})
    assert wait_for(lambda: ledger.get_balance(account).balance_nano == before), "the rest refunded"
    time.sleep(0.5)
    assert ledger.get_balance(account).balance_nano == before, "nothing counted twice"
    assert TopUp.objects.get().refunded_nano == 12_340_000_000
    assert ledger.check_consistency() == []


@pytest.mark.django_db(transaction=True)
def test_a_delayed_payment_credits_only_when_it_succeeds(live_server, console_standin):
    account = make_account()
    start_topup(account, Decimal("7"), "/billing/", live_server.url)
    start_topup(account, Decimal("9"), "/billing/", live_server.url)
    good, bad = TopUp.objects.order_by("id")
    for topup, action in ((good, "async_succeeded"), (bad, "async_failed")):
        text = httpx.get(topup.checkout_url).text
        assert httpx.post(topup.checkout_url, data={**pay_form(text), "action": action}).status_code == 303
    assert ledger.get_balance(account).balance_nano == 0, "completed but unpaid: nothing yet"
    assert wait_for(lambda: ledger.get_balance(account).balance_nano == 7 * USD)
    assert wait_for(lambda: TopUp.objects.get(pk=bad.pk).state == TopUpState.FAILED)
    assert TopUp.objects.get(pk=good.pk).state == TopUpState.PAID
    assert ledger.get_balance(account).balance_nano == 7 * USD


@pytest.mark.django_db(transaction=True)
def test_the_success_redirect_alone_never_credits(live_server, console_standin):
    account = make_account()
    start_topup(account, Decimal("10"), "/billing/", live_server.url)
    topup = TopUp.objects.get()
    # Visiting the success URL without paying (a guessed or replayed link) changes nothing.
    page = signed_in_client(account).get(
        f"/billing/topup/{topup.public_id}/success/?session_id={topup.checkout_session_id}"
    )
    assert "Waiting for Stripe to confirm the payment" in page.content.decode()
    assert ledger.get_balance(account).balance_nano == 0
    assert StripeEvent.objects.count() == 0


# --- make run ----------------------------------------------------------------------------------


def test_make_run_starts_the_stand_in_without_a_real_key():
    names = {p.name: p for p in devserver.planned_processes({"HOST": "127.0.0.1", "PORT": "8123"})}
    assert set(names) == {"web", "housekeeping", "worker", "stripe"}
    argv = names["stripe"].argv
    assert argv[1:3] == ["-m", "devtools.stripe_standin"]
    assert argv[argv.index("--port") + 1] == "8420"
    assert argv[argv.index("--webhook-url") + 1] == "http://127.0.0.1:8123/billing/stripe/webhook/"
    assert argv[argv.index("--webhook-secret") + 1] == "whsec_standin_local_only"


def test_make_run_follows_the_stand_in_port_host_and_secret():
    env = {"HOST": "0.0.0.0", "PORT": "9000", "STRIPE_STANDIN_PORT": "8555", "STRIPE_WEBHOOK_SECRET": "whsec_mine"}
    argv = next(p for p in devserver.planned_processes(env) if p.name == "stripe").argv
    assert argv[argv.index("--port") + 1] == "8555"
    assert argv[argv.index("--webhook-url") + 1] == "http://127.0.0.1:9000/billing/stripe/webhook/"
    assert argv[argv.index("--webhook-secret") + 1] == "whsec_mine"


@pytest.mark.parametrize(
    "env",
    [
        {"STRIPE_SECRET_KEY": "sk_test_real123"},
        {"STRIPE_SECRET_KEY": "sk_live_real123"},
        {"STRIPE_API_BASE": "https://api.stripe.com"},
    ],
)
def test_with_real_stripe_nothing_is_started(env):
    assert "stripe" not in {p.name for p in devserver.planned_processes(env)}


def test_the_devserver_command_line_really_starts_a_stand_in(tmp_path):
    """The exact argv make run uses comes up and answers (on a free port)."""
    port = free_port()
    proc = next(
        p
        for p in devserver.planned_processes({"STRIPE_STANDIN_PORT": str(port), "INFRAI_VAR_DIR": str(tmp_path)})
        if p.name == "stripe"
    )
    popen = subprocess.Popen(proc.argv, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/_standin/health"), timeout=20)
        client = stripe.StripeClient("sk_test_standin", base_addresses={"api": f"http://127.0.0.1:{port}"})
        session = client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "success_url": "http://x/ok",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Credit"}},
                    }
                ],
            }
        )
        assert (tmp_path / "stripe-standin.pickle").exists(), "state is kept in the var directory"
    finally:
        popen.terminate()
        popen.wait(10)
    popen = subprocess.Popen(proc.argv, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/_standin/health"), timeout=20)
        assert client.v1.checkout.sessions.retrieve(session.id).amount_total == 500, "sessions survive a restart"
    finally:
        popen.terminate()
        popen.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_webhook_needs_no_csrf_token():
    # Stripe cannot send a CSRF token: a CSRF-checking client gets past to the signature check.
    csrf_client = Client(enforce_csrf_checks=True)
    assert csrf_client.post("/billing/stripe/webhook/", "{}", content_type="application/json").status_code == 400


@pytest.mark.django_db
def test_cancelling_on_the_pay_page_expires_the_session_so_it_cannot_be_paid_later(standin):
    account = make_account()
    url = start_topup(account, Decimal("10"), "/billing/", "http://testserver")
    topup = TopUp.objects.get()
    page = signed_in_client(account).get(f"/billing/topup/{topup.public_id}/cancel/")
    assert page.status_code == 200 and "nothing was charged" in page.content.decode()
    topup.refresh_from_db()
    assert topup.state == TopUpState.EXPIRED
    text = httpx.get(url).text
    assert "expired" in text.lower() or "name='token'" not in text
