"""Topping up the balance from a real browser, through the local Stripe stand-in's hosted page.

The live server here is a console of its own whose Stripe SDK talks to a stand-in
(devtools/stripe_standin) and whose webhook secret is the stand-in's: paying on the stand-in's
page sends a really signed `checkout.session.completed` to the console, which credits the balance.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devtools.stripe_standin.runner import running_standin
from tests.browser.conftest import LiveServer, Mailbox, _logs, free_port, retry_on_port_clash
from tests.browser.test_sign_in import expect, sign_in_by_email

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import Screenshots

pytestmark = pytest.mark.browser

WEBHOOK_SECRET = "whsec_browser_" + uuid.uuid4().hex


@dataclass
class StripeConsole:
    """A console live server paying through a Stripe stand-in."""

    server: LiveServer
    standin_url: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def stripe_console(browser_workdir: Path) -> Iterator[StripeConsole]:
    # The stand-in must know the console's webhook URL, and the console the stand-in's API base:
    # so the console's port is chosen first, as for the OpenID Connect provider.
    with contextlib.ExitStack() as stack:

        def start() -> StripeConsole:
            port = free_port()
            webhook_url = f"http://127.0.0.1:{port}/billing/stripe/webhook/"
            attempt = contextlib.ExitStack()
            standin_url = attempt.enter_context(running_standin(webhook_url, WEBHOOK_SECRET))
            try:
                server = LiveServer.start(
                    browser_workdir / "topup",
                    "topup",
                    port=port,
                    extra_env={"STRIPE_API_BASE": standin_url, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET},
                )
            except BaseException:
                attempt.close()
                raise
            stack.push(attempt)
            stack.callback(server.stop)
            return StripeConsole(server, standin_url)

        console = retry_on_port_clash(start)
        _logs[f"console at {console.url} (Stripe stand-in at {console.standin_url})"] = console.server.log_path
        yield console


@pytest.fixture
def stripe_mailbox(stripe_console: StripeConsole) -> Mailbox:
    return Mailbox(stripe_console.server.mail_dir)


def _new_email() -> str:
    return f"topup-{uuid.uuid4().hex[:12]}@example.com"


def _open_billing(page: Page, console: StripeConsole) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Billing").click()
    expect(page).to_have_url(console.url + "/billing/")
    expect(page.get_by_role("heading", name="Billing", exact=True)).to_be_visible()
    expect(page.get_by_test_id("test-mode")).to_have_text("Test mode")
    expect(page.get_by_text("Stripe test mode (local stand-in): no real card is charged.")).to_be_visible()


def _open_dashboard(page: Page, console: StripeConsole) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page).to_have_url(console.url + "/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def _expect_pay_page(page: Page, console: StripeConsole, amount: str) -> None:
    expect(page).to_have_url(re.compile("^" + re.escape(console.standin_url) + r"/pay/cs_test_\w+$"))
    expect(page.get_by_role("note")).to_have_text("Stripe test mode (local stand-in): no real money moves")
    expect(page.get_by_test_id("amount")).to_contain_text(amount)
    expect(page.get_by_role("button", name=f"Pay {amount}")).to_be_visible()


def test_a_new_user_tops_up_10_dollars_with_the_preset_and_pays_on_the_standin(
    page: Page, stripe_console: StripeConsole, stripe_mailbox: Mailbox, screenshot: Screenshots
) -> None:
    console = stripe_console
    sign_in_by_email(page, console.url, stripe_mailbox, screenshot, _new_email())
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    screenshot(page, "dashboard-before")

    _open_billing(page, console)
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    expect(page.get_by_test_id("history")).to_contain_text("No entries yet")
    screenshot(page, "billing-before")

    presets = page.get_by_role("form", name="Preset amounts")
    expect(presets.get_by_role("button")).to_have_text(["$5", "$10", "$25", "$100"])
    presets.get_by_role("button", name="$10", exact=True).click()

    _expect_pay_page(page, console, "$10.00")
    screenshot(page, "standin-pay-page")
    page.get_by_role("button", name="Pay $10.00").click()

    expect(page).to_have_url(re.compile("^" + re.escape(console.url) + r"/billing/topup/[^/]+/success/\?session_id="))
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    expect(page.get_by_test_id("topup-state")).to_have_text(
        "Payment confirmed: $10.00 was added to your balance.", timeout=20_000
    )
    expect(page.get_by_test_id("balance")).to_have_text("$10.00")
    screenshot(page, "success")

    page.get_by_role("link", name="Billing and history").click()
    expect(page).to_have_url(console.url + "/billing/")
    expect(page.get_by_test_id("balance")).to_have_text("$10.00")
    expect(page.get_by_test_id("available")).to_have_text("$10.00")
    rows = page.get_by_test_id("history").locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td")).to_have_text(
        [
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"),
            "Top-up",
            re.compile(r"^Stripe top-up \S+$"),
            "+$10.00",
            "",
            "$10.00",
        ]
    )
    expect(page.get_by_test_id("topups").locator("tbody tr")).to_have_count(1)
    expect(page.get_by_test_id("topups").locator("tbody tr").first).to_contain_text("paid")
    screenshot(page, "billing-after")

    _open_dashboard(page, console)
    expect(page.get_by_test_id("balance")).to_have_text("$10.00")
    screenshot(page, "dashboard-after")


def test_a_custom_amount_below_the_minimum_shows_a_field_error(
    page: Page, stripe_console: StripeConsole, stripe_mailbox: Mailbox, screenshot: Screenshots
) -> None:
    console = stripe_console
    sign_in_by_email(page, console.url, stripe_mailbox, screenshot, _new_email())
    _open_billing(page, console)

    page.get_by_label("Other amount (USD)").fill("4.99")
    screenshot(page, "amount-entered")
    page.get_by_role("button", name="Continue to payment").click()

    # The form comes back with the error at the field; nobody was sent to Stripe.
    expect(page).to_have_url(console.url + "/billing/topup/")
    error = page.locator(".field-error")
    expect(error).to_have_count(1)
    expect(error).to_have_text(re.compile(r"between \$5\.00 and \$1,000\.00"))
    expect(error).to_have_attribute("role", "alert")
    expect(page.get_by_label("Other amount (USD)")).to_have_value("4.99")
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    expect(page.get_by_test_id("topups")).to_have_count(0)
    screenshot(page, "field-error")


def test_cancel_on_the_pay_page_returns_to_the_cancel_page_with_the_balance_unchanged(
    page: Page, stripe_console: StripeConsole, stripe_mailbox: Mailbox, screenshot: Screenshots
) -> None:
    console = stripe_console
    sign_in_by_email(page, console.url, stripe_mailbox, screenshot, _new_email())
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    _open_billing(page, console)

    page.get_by_role("form", name="Preset amounts").get_by_role("button", name="$10", exact=True).click()
    _expect_pay_page(page, console, "$10.00")
    screenshot(page, "standin-pay-page")
    page.get_by_role("link", name="Cancel").click()

    expect(page).to_have_url(re.compile("^" + re.escape(console.url) + r"/billing/topup/[^/]+/cancel/$"))
    expect(page.get_by_role("heading", name="Top-up cancelled")).to_be_visible()
    expect(page.get_by_text("nothing was charged and your balance is unchanged")).to_be_visible()
    screenshot(page, "cancel-page")

    page.get_by_role("link", name="Choose an amount again").click()
    expect(page).to_have_url(re.compile("^" + re.escape(console.url) + r"/billing/\?return_to=.*#topup$"))
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    expect(page.get_by_test_id("history")).to_contain_text("No entries yet")
    screenshot(page, "billing-after-cancel")

    _open_dashboard(page, console)
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    screenshot(page, "dashboard-after-cancel")


def test_a_delayed_payment_leaves_the_success_page_waiting_until_it_updates_by_itself(
    page: Page, stripe_console: StripeConsole, stripe_mailbox: Mailbox, screenshot: Screenshots
) -> None:
    """The success page polls until Stripe's webhook has credited the top-up.

    The stand-in's delayed method completes the session unpaid and pays 2 s later. Whether the
    browser gets back before or after that is a race, so a second tab opens the success page
    before paying: it must say it is waiting, then show the credit without being reloaded.
    """
    console = stripe_console
    sign_in_by_email(page, console.url, stripe_mailbox, screenshot, _new_email())
    _open_billing(page, console)
    page.get_by_label("Other amount (USD)").fill("12.34")
    page.get_by_role("button", name="Continue to payment").click()
    _expect_pay_page(page, console, "$12.34")

    cancel_url = page.get_by_role("link", name="Cancel").get_attribute("href") or ""
    assert re.fullmatch(re.escape(console.url) + r"/billing/topup/[^/]+/cancel/", cancel_url), cancel_url
    waiting = page.context.new_page()
    errors: list[str] = []
    waiting.on("pageerror", lambda error: errors.append(str(error)))
    waiting.goto(cancel_url.removesuffix("cancel/") + "success/")
    expect(waiting.get_by_test_id("topup-state")).to_have_text(
        "Waiting for Stripe to confirm the payment… This updates by itself."
    )
    expect(waiting.get_by_test_id("balance")).to_have_text("$0.00")
    screenshot(waiting, "success-waiting")
    loads: list[str] = []
    waiting.on("framenavigated", lambda frame: loads.append(frame.url) if frame == waiting.main_frame else None)

    page.bring_to_front()
    page.get_by_text("Other test outcomes").click()
    screenshot(page, "standin-other-outcomes")
    page.get_by_role("button", name="Delayed payment that succeeds").click()
    expect(page).to_have_url(re.compile("^" + re.escape(console.url) + r"/billing/topup/[^/]+/success/"))
    expect(page.get_by_test_id("topup-state")).to_have_text(
        "Payment confirmed: $12.34 was added to your balance.", timeout=20_000
    )
    expect(page.get_by_test_id("balance")).to_have_text("$12.34")
    screenshot(page, "success-confirmed")

    expect(waiting.get_by_test_id("topup-state")).to_have_text(
        "Payment confirmed: $12.34 was added to your balance.", timeout=10_000
    )
    expect(waiting.get_by_test_id("balance")).to_have_text("$12.34")
    assert loads == [], f"the waiting page reloaded instead of updating in place: {loads}"
    assert errors == [], errors
    screenshot(waiting, "waiting-tab-updated")
