"""Top-up: amount rules, starting Stripe Checkout, and the console's billing pages."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import stripe
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from billing import ledger, views
from billing.models import EntryKind, LedgerEntry, TopUp, TopUpState
from billing.stripe_checkout import TopUpError, TopUpUnavailable, parse_amount, start_topup, stripe_client
from billing.topup import api_topup
from devtools.stripe_standin.runner import free_port, running_standin
from tests.factories import make_account, signed_in_client

pytestmark = pytest.mark.django_db
USD = 1_000_000_000


@pytest.fixture(scope="module")
def standin_url():
    # Nothing is paid in this module, so the webhook URL is never called.
    with running_standin("http://127.0.0.1:9/unused", django_settings.STRIPE_WEBHOOK_SECRET) as url:
        yield url


@pytest.fixture
def standin(settings, standin_url):
    settings.STRIPE_API_BASE = standin_url
    return standin_url


def stripe_session(session_id: str):
    return stripe_client().v1.checkout.sessions.retrieve(session_id)


# --- Amount rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("25", "25.00"),
        ("25.5", "25.50"),
        (" 10.10 ", "10.10"),
        ("$12", "12.00"),
        (10, "10.00"),
        (10.1, "10.10"),
        (Decimal("999.99"), "999.99"),
        ("5", "5.00"),
        ("1000", "1000.00"),
        ("7.500", "7.50"),
    ],
)
def test_amounts_within_bounds_in_whole_cents_are_accepted(raw, expected):
    assert parse_amount(raw) == Decimal(expected)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "Enter an amount in USD (amount_usd)."),
        ("", "Enter an amount in USD (amount_usd)."),
        ("abc", "amount_usd must be a number of US dollars"),
        ("1e3", "amount_usd must be a number of US dollars"),
        ("NaN", "amount_usd must be a number of US dollars"),
        ("-10", "amount_usd must be a number of US dollars"),
        (True, "amount_usd must be a number of US dollars"),
        ([10], "amount_usd must be a number of US dollars"),
        ({"usd": 10}, "amount_usd must be a number of US dollars"),
        (float("inf"), "amount_usd must be a finite number"),
        ("10.001", "at most 2 decimals"),
        (10.005, "at most 2 decimals"),
        ("4.99", "amount_usd must be between $5.00 and $1,000.00."),
        ("1000.01", "amount_usd must be between $5.00 and $1,000.00."),
        (0, "amount_usd must be between $5.00 and $1,000.00."),
    ],
)
def test_bad_amounts_are_refused_naming_the_field(raw, message):
    with pytest.raises(TopUpError) as refused:
        parse_amount(raw)
    assert refused.value.field == "amount_usd"
    assert message in refused.value.message
    assert isinstance(refused.value, ValueError)


def test_the_bounds_come_from_settings(settings):
    settings.TOPUP_MIN_USD = Decimal("1")
    settings.TOPUP_MAX_USD = Decimal("50")
    assert parse_amount("1") == Decimal("1.00")
    with pytest.raises(TopUpError, match=r"between \$1.00 and \$50.00"):
        parse_amount("50.01")


def test_api_topup_refuses_bad_input_before_touching_stripe(settings):
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"  # nothing listens: a call would fail differently
    account = make_account()
    for raw in (None, "ten", "3", 2000, "5.555"):
        with pytest.raises(ValueError) as refused:
            api_topup(account, raw, "http://testserver")
        assert refused.value.field == "amount_usd"
    assert TopUp.objects.count() == 0


# --- Starting Checkout -------------------------------------------------------------------------


def test_start_topup_creates_a_checkout_session_for_the_amount(standin):
    account = make_account("bob@example.com")
    url = start_topup(account, Decimal("12.34"), "/keys/", "http://console.test")
    topup = TopUp.objects.get()
    assert url == f"{standin}/pay/{topup.checkout_session_id}"
    assert (topup.state, topup.amount_nano, topup.return_path, topup.origin) == (
        "pending",
        12_340_000_000,
        "/keys/",
        "console",
    )
    session = stripe_session(topup.checkout_session_id)
    assert (session.mode, session.amount_total, session.currency) == ("payment", 1234, "usd")
    assert session.client_reference_id == topup.public_id
    assert session.metadata.to_dict() == {"account": account.public_id, "topup": topup.public_id}
    assert session.customer_email == "bob@example.com"
    assert (
        session.success_url
        == f"http://console.test/billing/topup/{topup.public_id}/success/?session_id={{CHECKOUT_SESSION_ID}}"
    )
    assert session.cancel_url == f"http://console.test/billing/topup/{topup.public_id}/cancel/"
    assert ledger.get_balance(account).balance_nano == 0, "starting a top-up credits nothing"


def test_api_topup_returns_the_checkout_url(standin):
    account = make_account()
    url = api_topup(account, 20.5, "http://console.test")
    topup = TopUp.objects.get()
    assert url.endswith(f"/pay/{topup.checkout_session_id}")
    assert (topup.amount_nano, topup.origin, topup.return_path) == (20_500_000_000, "api", "/billing/")


def test_stripe_is_never_called_inside_a_transaction(standin):
    account = make_account()
    with pytest.raises(RuntimeError, match="inside a database transaction"), transaction.atomic():
        start_topup(account, Decimal("10"), "/billing/", "http://console.test")
    assert TopUp.objects.count() == 0


def test_when_stripe_is_down_the_top_up_fails_cleanly_and_the_page_says_so(settings):
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"
    account = make_account()
    with pytest.raises(TopUpUnavailable):
        start_topup(account, Decimal("10"), "/billing/", "http://console.test")
    assert TopUp.objects.get().state == TopUpState.FAILED
    response = signed_in_client(account).post("/billing/topup/", {"amount_usd": "10"})
    assert response.status_code == 503
    assert "Stripe could not start the payment; nothing was charged." in response.content.decode()


# --- The billing page --------------------------------------------------------------------------


def test_billing_requires_sign_in(client):
    response = client.get("/billing/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_billing_page_shows_balance_holds_available_and_test_mode():
    account = make_account(credit_nano=20 * USD)
    ledger.reserve(account, 3 * USD, "req-hold-1", memo="chat sandbox-chat")
    page = signed_in_client(account).get("/billing/").content.decode()
    assert re.search(r'data-testid="balance">\$20.00<', page)
    assert re.search(r'data-testid="available">\$17.00<', page)
    assert re.search(r'data-testid="held">\$3.00<', page)
    assert "chat sandbox-chat" in page
    assert 'data-testid="test-mode">Test mode<' in page
    assert "Between $5.00 and $1,000.00, in whole cents." in page
    for preset in django_settings.TOPUP_PRESETS_USD:
        assert f'name="amount_usd" value="{preset}">${preset}</button>' in page
    assert 'href="/billing/" aria-current="page">Billing</a>' in page


def test_a_suggested_amount_from_a_402_prefills_the_custom_amount():
    user = signed_in_client(make_account())
    page = user.get("/billing/?amount_usd=37").content.decode()
    assert re.search(r'<input type="text" name="amount_usd" value="37.00"', page)
    refused = user.get("/billing/?amount_usd=<script>").content.decode()
    assert (
        "<script>" not in refused
        and 'name="amount_usd" value=' not in refused.split("Other amount")[1].split("</form>")[0]
    )


def test_the_test_mode_label_is_absent_with_live_keys(settings):
    settings.STRIPE_TEST_MODE = False
    page = signed_in_client(make_account()).get("/billing/").content.decode()
    assert "Test mode" not in page


def test_the_dashboard_links_to_billing():
    page = signed_in_client(make_account()).get("/").content.decode()
    assert 'href="/billing/">Top up</a>' in page


def test_history_lists_entries_newest_first_and_paginates_by_25():
    account = make_account()
    start = timezone.now() - timedelta(days=1)
    for n in range(30):
        ledger.credit(account, (n + 1) * USD, EntryKind.ADJUSTMENT, f"adj-{n}", memo=f"adjustment number {n}")
        LedgerEntry.objects.filter(reference=f"adj-{n}").update(created_at=start + timedelta(minutes=n))
    user = signed_in_client(account)
    first = user.get("/billing/").content.decode()
    rows = re.findall(r"adjustment number (\d+)</td>", first)
    assert rows == [str(n) for n in range(29, 4, -1)], "25 newest first"
    assert "Page 1 of 2 · 30 entries" in first
    assert "+$30.00" in first
    second = user.get("/billing/?page=2").content.decode()
    assert re.findall(r"adjustment number (\d+)</td>", second) == ["4", "3", "2", "1", "0"]
    assert "Page 2 of 2" in second
    assert user.get("/billing/?page=99").status_code == 200


def test_history_shows_debits_with_a_minus_sign_and_only_the_users_own_entries():
    account = make_account(credit_nano=10 * USD)
    ledger.debit(account, 2_500_000_000, EntryKind.REFUND, "refund:ch_x:250", memo="Stripe refund of top-up t")
    other = make_account("eve@example.com", credit_nano=7 * USD)
    ledger.credit(other, USD, EntryKind.ADJUSTMENT, "eve-secret", memo="eve's private entry")
    page = signed_in_client(account).get("/billing/").content.decode()
    assert "\u2212$2.50" in page and "Stripe refund of top-up t" in page
    assert "eve&#x27;s private entry" not in page and "eve's private entry" not in page


def test_the_csv_export_has_every_entry_with_exact_amounts():
    account = make_account(credit_nano=10 * USD)
    hold = ledger.reserve(account, USD, "req-csv", memo='=HYPERLINK("http://evil")')
    ledger.settle(hold, 200)  # $0.0000002: exact, not rounded
    response = signed_in_client(account).get("/billing/history.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(f'attachment; filename="infrai-ledger-{account.public_id}-')
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["date", "type", "description", "amount_usd", "held_change_usd", "balance_after_usd", "reference"]
    body = rows[1:]
    assert [r[1] for r in body] == ["Usage", "Release", "Hold", "Adjustment"]
    usage = body[0]
    assert usage[3:6] == ["-0.0000002", "0.00", "9.9999998"]
    assert usage[2].startswith("'="), "a formula-looking memo is neutralised"
    assert body[2][4] == "1.00" and body[1][4] == "-1.00"
    assert body[3][3] == "10.00"


def test_the_csv_export_streams_in_chunks_without_losing_or_repeating_rows(monkeypatch):
    monkeypatch.setattr(views, "CSV_CHUNK", 3)
    account = make_account()
    for n in range(4):  # each settle posts two entries with the same timestamp
        ledger.credit(account, USD, EntryKind.ADJUSTMENT, f"c-{n}")
        ledger.settle(ledger.reserve(account, USD, f"r-{n}"), 100)
    expected = list(
        LedgerEntry.objects.filter(account=account).order_by("-created_at", "-id").values_list("reference", flat=True)
    )
    response = signed_in_client(account).get("/billing/history.csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))[1:]
    assert [r[6] for r in rows] == expected
    assert len(expected) == 16


def test_the_csv_export_needs_sign_in(client):
    assert client.get("/billing/history.csv").status_code == 302


# --- Top-up from the page ----------------------------------------------------------------------


def test_a_preset_top_up_redirects_303_to_stripe_checkout(standin):
    account = make_account()
    response = signed_in_client(account).post("/billing/topup/", {"amount_usd": "25", "return_to": "/billing/"})
    topup = TopUp.objects.get()
    assert response.status_code == 303
    assert response["Location"] == f"{standin}/pay/{topup.checkout_session_id}"
    assert stripe_session(topup.checkout_session_id).amount_total == 2500


def test_a_bad_custom_amount_shows_the_field_error_and_starts_nothing(standin):
    account = make_account()
    response = signed_in_client(account).post("/billing/topup/", {"amount_usd": "2.5"})
    assert response.status_code == 400
    page = response.content.decode()
    assert '<p class="field-error" role="alert">The amount must be between $5.00 and $1,000.00.</p>' in page
    assert 'value="2.5"' in page, "the typed amount is kept"
    assert TopUp.objects.count() == 0


def test_a_top_up_needs_post_and_sign_in(client):
    account = make_account()
    assert signed_in_client(account).get("/billing/topup/").status_code == 405
    assert client.post("/billing/topup/", {"amount_usd": "10"}).status_code == 302
    assert TopUp.objects.count() == 0


def test_the_success_page_does_not_credit_and_shows_the_balance_while_waiting(standin):
    account = make_account(credit_nano=USD)
    user = signed_in_client(account)
    user.post("/billing/topup/", {"amount_usd": "10"})
    topup = TopUp.objects.get()
    success = f"/billing/topup/{topup.public_id}/success/?session_id={topup.checkout_session_id}"
    page = user.get(success).content.decode()
    assert "The credit appears on your balance when Stripe confirms the payment" in page
    assert "Waiting for Stripe to confirm the payment" in page
    assert re.search(r'data-testid="balance">\$1.00<', page)
    assert f'hx-get="/billing/topup/{topup.public_id}/status/" hx-trigger="every 2s"' in page
    assert ledger.get_balance(account).balance_nano == USD
    assert LedgerEntry.objects.filter(kind=EntryKind.TOPUP).count() == 0
    assert TopUp.objects.get().state == TopUpState.PENDING


def test_the_status_block_shows_the_credit_once_the_webhook_has_landed(standin, client):
    account = make_account(credit_nano=USD)
    user = signed_in_client(account)
    user.post("/billing/topup/", {"amount_usd": "10"})
    topup = TopUp.objects.get()
    session = stripe_session(topup.checkout_session_id).to_dict()
    session.update(status="complete", payment_status="paid")
    payload = json.dumps(
        {
            "id": "evt_ok",
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": session},
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(payload, django_settings.STRIPE_WEBHOOK_SECRET)
    assert (
        client.post(
            "/billing/stripe/webhook/", payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        ).status_code
        == 200
    )
    block = user.get(f"/billing/topup/{topup.public_id}/status/").content.decode()
    assert "Payment confirmed: $10.00 was added to your balance." in block
    assert re.search(r'data-testid="balance">\$11.00<', block)
    assert "hx-trigger" not in block, "polling stops once settled"


def test_someone_elses_top_up_pages_are_not_found(standin):
    owner = make_account()
    signed_in_client(owner).post("/billing/topup/", {"amount_usd": "10"})
    topup = TopUp.objects.get()
    intruder = signed_in_client(make_account("mallory@example.com"))
    for page in ("success", "cancel", "status"):
        assert intruder.get(f"/billing/topup/{topup.public_id}/{page}/").status_code == 404


def test_the_cancel_page_says_nothing_was_charged_and_offers_the_way_back(standin):
    account = make_account()
    user = signed_in_client(account)
    user.post("/billing/topup/", {"amount_usd": "10", "return_to": "/keys/"})
    topup = TopUp.objects.get()
    page = user.get(f"/billing/topup/{topup.public_id}/cancel/").content.decode()
    assert "nothing was charged and your balance is unchanged" in page
    assert 'href="/keys/">Back to where you were</a>' in page
    assert 'href="/billing/?return_to=/keys/#topup"' in page


# --- return_to ---------------------------------------------------------------------------------


def test_return_to_brings_the_user_back_after_paying(standin):
    account = make_account()
    user = signed_in_client(account)
    form = user.get("/billing/?return_to=/projects/%3Ftab%3D2").content.decode()
    assert form.count('name="return_to" value="/projects/?tab=2"') == 2
    user.post("/billing/topup/", {"amount_usd": "10", "return_to": "/projects/?tab=2"})
    topup = TopUp.objects.get()
    assert topup.return_path == "/projects/?tab=2"
    page = user.get(f"/billing/topup/{topup.public_id}/success/").content.decode()
    assert 'href="/projects/?tab=2">Continue where you were</a>' in page


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/phish",
        "//evil.example/phish",
        "http:/evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil.example",
    ],
)
def test_return_to_refuses_anything_but_a_local_path(standin, target):
    account = make_account()
    user = signed_in_client(account)
    form = user.get("/billing/", {"return_to": target}).content.decode()
    assert "evil" not in form and "javascript" not in form
    assert 'name="return_to" value="/billing/"' in form
    response = user.post("/billing/topup/", {"amount_usd": "10", "return_to": target})
    assert response.status_code == 303
    topup = TopUp.objects.get()
    assert topup.return_path == "/billing/"
    for page in ("success", "cancel"):
        assert "evil" not in user.get(f"/billing/topup/{topup.public_id}/{page}/").content.decode()
