"""Signing in from a real browser: by e-mail link, and through an OpenID Connect provider."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import Mailbox, OidcSetup, Screenshots

pytestmark = pytest.mark.browser


def expect(target: object):  # noqa: ANN201
    """Playwright's `expect`, imported late: collecting these tests must not need Playwright."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)  # type: ignore[call-overload]


def sign_in_by_email(page: Page, live_url: str, mailbox: Mailbox, screenshot: Screenshots, email: str) -> None:
    page.goto(live_url + "/login/")
    expect(page.get_by_role("heading", name="InfraiConsole")).to_be_visible()
    screenshot(page, "login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_role("button", name="E-mail me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your e-mail")).to_be_visible()
    expect(page.get_by_text(email)).to_be_visible()
    screenshot(page, "check-email")

    link = mailbox.link(email)
    assert link.startswith(live_url + "/login/magic/")
    page.goto(link)
    screenshot(page, "confirm")
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(live_url + "/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_text(email)).to_be_visible()


def test_email_sign_in_then_create_a_key_and_call_the_api(
    page: Page, live_url: str, mailbox: Mailbox, screenshot: Screenshots
) -> None:
    sign_in_by_email(page, live_url, mailbox, screenshot, f"browser-{uuid.uuid4().hex[:12]}@example.com")
    expect(page.get_by_test_id("balance")).to_have_text("$0.00")
    screenshot(page, "dashboard")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Keys").click()
    expect(page).to_have_url(live_url + "/keys/")
    screenshot(page, "keys")
    page.get_by_label("Label").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    new_key = page.get_by_test_id("new-key")
    expect(new_key).to_have_text(re.compile(r"^ifr_pk_proj_\S+$"))
    secret = new_key.inner_text().strip()
    expect(page.get_by_role("row").filter(has_text="laptop")).to_contain_text("active")
    screenshot(page, "new-key")

    # The secret is shown once: a fresh load of the page lists the key by its prefix only.
    page.goto(live_url + "/keys/")
    expect(page.get_by_role("row").filter(has_text="laptop")).to_be_visible()
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    assert secret not in page.content()
    screenshot(page, "keys-after-reload")

    response = httpx.get(live_url + "/v1/account/balance", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["balance_usd"] == "0.00"


def test_reloading_the_new_key_page_creates_no_second_key(
    page: Page, live_url: str, mailbox: Mailbox, screenshot: Screenshots
) -> None:
    sign_in_by_email(page, live_url, mailbox, screenshot, f"browser-{uuid.uuid4().hex[:12]}@example.com")
    page.goto(live_url + "/keys/")
    page.get_by_label("Label").fill("desktop")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-key")).to_have_text(re.compile(r"^ifr_pk_proj_"))

    page.reload()
    screenshot(page, "after-reload")
    expect(page.get_by_role("row").filter(has_text="desktop")).to_have_count(1, timeout=2_000)
    expect(page.get_by_test_id("new-key")).to_have_count(0)


def _sign_in_at_provider(page: Page, oidc: OidcSetup, login: str, screenshot: Screenshots, step: str) -> None:
    server = oidc.server.url
    page.goto(server + "/login/")
    screenshot(page, f"{step}-console-login")
    page.get_by_role("button", name="Continue with OpenID Connect").click()

    expect(page).to_have_url(re.compile("^" + re.escape(oidc.provider.issuer) + "/interaction/"))
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    screenshot(page, f"{step}-provider-login")
    page.get_by_role("button", name="Sign-in").click()

    expect(page.get_by_role("button", name="Continue")).to_be_visible()
    screenshot(page, f"{step}-provider-consent")
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(server + "/")


def test_openid_connect_sign_in_grants_the_signup_credit_once(
    page: Page, oidc: OidcSetup, screenshot: Screenshots
) -> None:
    login = f"oidc-{uuid.uuid4().hex[:12]}"
    email = f"{login}@oidc.test"  # what devtools/oidc/server.js reports for a login name without "@"

    _sign_in_at_provider(page, oidc, login, screenshot, "first")
    expect(page.get_by_test_id("balance")).to_have_text("$2.00")
    expect(page.get_by_role("navigation", name="Main").get_by_text(email)).to_be_visible()
    screenshot(page, "first-dashboard")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(oidc.server.url + "/login/")
    # Forget the provider's session too, so the second sign-in goes through its login again.
    page.context.clear_cookies()

    _sign_in_at_provider(page, oidc, login, screenshot, "second")
    expect(page.get_by_test_id("balance")).to_have_text("$2.00")
    expect(page.get_by_role("navigation", name="Main").get_by_text(email)).to_be_visible()
    screenshot(page, "second-dashboard")
