"""The playground in a real browser: chat streams and stops, compare, image with upscale and
vision, the cost view, the fallback without a socket, and the 402 that leads to a top-up.

The live server is conftest's `LiveServer` with the sandbox paced at a readable rate (the
browser tests' own settings stream instantly, which leaves nothing to stop): it runs on
`infrai.settings.base` with SANDBOX_TOKENS_PER_SECOND set.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devtools.stripe_standin.runner import running_standin
from tests.browser.conftest import REPO, LiveServer, Mailbox, free_port, retry_on_port_clash

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import Screenshots

pytestmark = pytest.mark.browser

STANDIN_SECRET = "whsec_playground_browser_tests"
TOKENS_PER_SECOND = "30"
LONG_PROMPT = "Write a long essay about rivers, the sea, and the people who live beside them."


def expect(target: object):  # noqa: ANN201
    """Playwright's `expect`, imported late: collecting these tests must not need Playwright."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def server(browser_workdir: Path) -> Iterator[LiveServer]:
    # The 402's one-click top-up goes to Stripe Checkout: the local stand-in plays Stripe here.
    with contextlib.ExitStack() as stack:

        def start() -> LiveServer:
            port = free_port()
            attempt = contextlib.ExitStack()
            standin_url = attempt.enter_context(
                running_standin(f"http://127.0.0.1:{port}/billing/stripe/webhook/", STANDIN_SECRET)
            )
            try:
                started = LiveServer.start(
                    browser_workdir / "playground",
                    "playground",
                    port=port,
                    extra_env={
                        "DJANGO_SETTINGS_MODULE": "infrai.settings.base",
                        "SANDBOX_TOKENS_PER_SECOND": TOKENS_PER_SECOND,
                        "STRIPE_API_BASE": standin_url,
                        "STRIPE_WEBHOOK_SECRET": STANDIN_SECRET,
                    },
                )
            except BaseException:
                attempt.close()
                raise
            stack.push(attempt)
            stack.callback(started.stop)
            return started

        yield retry_on_port_clash(start)


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def account(server: LiveServer, credit_usd: str | None = "5") -> str:
    email = f"pg-{uuid.uuid4().hex[:12]}@example.com"
    argv = [sys.executable, "manage.py", "create_account", email]
    if credit_usd:
        argv += ["--credit-usd", credit_usd]
    subprocess.run(argv, cwd=REPO, env=server.env, check=True, capture_output=True, timeout=120)
    return email


def sign_in(page: Page, server: LiveServer, email: str) -> None:
    page.goto(server.url + "/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_role("button", name="E-mail me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your e-mail")).to_be_visible()
    page.goto(Mailbox(server.mail_dir).link(email))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def open_playground(page: Page, server: LiveServer, path: str = "/playground/") -> None:
    page.goto(server.url + path)
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    expect(page.locator("[data-socket-status]")).to_have_text(re.compile("^Live"))


def assert_fits(page: Page, width: int) -> None:
    # Measured once the page's stylesheets are in (the load event): before that, a page whose
    # CSS is still being revalidated lays out unstyled, wider than any viewport.
    page.wait_for_load_state("load")
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow}px wide at a {width}px viewport"


def test_chat_streams_stops_and_shows_what_each_reply_cost(
    page: Page, server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    sign_in(page, server, account(server))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Playground").click()
    expect(page.locator("[data-socket-status]")).to_have_text(re.compile("^Live"))
    expect(page.get_by_label("Task")).to_be_visible()  # Auto routing shows task and prefer
    page.get_by_label("Model").select_option("sandbox-chat")
    expect(page.get_by_label("Task")).to_be_hidden()
    page.get_by_label("Max tokens").fill("800")
    screenshot(page, "chat-empty")

    prompt = page.get_by_label("Message")
    prompt.fill(LONG_PROMPT)
    prompt.press("Enter")
    reply = page.locator(".pg-assistant").last
    expect(page.locator(".pg-user").last).to_have_text(re.compile(re.escape(LONG_PROMPT)))
    expect(reply).to_have_class(re.compile("pg-streaming"))
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    page.wait_for_function("document.querySelector('.pg-assistant .pg-text').textContent.length > 40")
    first_length = len(reply.locator(".pg-text").inner_text())
    page.wait_for_function(
        f"document.querySelector('.pg-assistant .pg-text').textContent.length > {first_length + 20}"
    )  # still arriving, token by token
    screenshot(page, "chat-streaming")

    page.keyboard.press("Escape")
    meta = reply.get_by_test_id("run-meta")
    expect(meta).to_be_visible()
    expect(meta.get_by_text("stopped")).to_be_visible()
    expect(meta.get_by_test_id("cost")).to_have_text(re.compile(r"^\$0\.\d+"))
    expect(meta.get_by_test_id("vendor")).to_have_text("sandbox")
    expect(meta.get_by_test_id("request-id")).to_have_text(re.compile(r"^[0-9a-f-]{36}$"))
    stopped_text = reply.locator(".pg-text").inner_text()
    assert 40 < len(stopped_text) < 3000
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    screenshot(page, "chat-stopped")

    page.get_by_label("Max tokens").fill("30")
    prompt.fill("And now, briefly?")
    page.get_by_role("button", name="Send").click()
    second = page.locator(".pg-assistant").nth(1)
    expect(second.get_by_test_id("run-meta")).to_be_visible(timeout=20_000)
    expect(second.get_by_test_id("tokens")).to_have_text(re.compile(r"^\d+ tokens$"))
    expect(second.get_by_test_id("latency")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator(".pg-turn")).to_have_count(4)  # the history stays in the page

    second.get_by_text("View code").click()
    code = second.locator("pre:not([hidden]) code")
    expect(code).to_contain_text(f"curl -N {server.url}/v1/chat/completions")
    expect(code).to_contain_text("Bearer $INFRAI_KEY")
    second.get_by_role("button", name="Python").click()
    expect(second.locator("pre:not([hidden]) code")).to_contain_text(f'base_url="{server.url}/v1"')
    expect(second.locator("pre:not([hidden]) code")).to_contain_text("And now, briefly?")
    second.get_by_role("button", name="JavaScript").click()
    expect(second.locator("pre:not([hidden]) code")).to_contain_text("await fetch(")
    screenshot(page, "chat-view-code")

    # The conversation survives a reload (sessionStorage), and the page reads at phone width.
    page.reload()
    expect(page.locator(".pg-turn")).to_have_count(4)
    page.set_viewport_size({"width": 375, "height": 800})
    expect(page.get_by_label("Message")).to_be_visible()
    assert_fits(page, 375)
    screenshot(page, "chat-phone")
    assert console_errors == []


def test_compare_streams_two_columns_side_by_side(
    page: Page, server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    sign_in(page, server, account(server))
    open_playground(page, server)
    page.get_by_role("navigation", name="Playground").get_by_role("link", name="Compare").click()
    expect(page.locator("[data-socket-status]")).to_have_text(re.compile("^Live"))
    checked = page.locator("input[name=models]:checked")
    expect(checked).to_have_count(2)
    page.get_by_text("System prompt, temperature, max tokens").click()
    page.get_by_label("Max tokens").fill("60")
    page.get_by_label("Prompt", exact=True).fill(LONG_PROMPT)
    page.get_by_label("Prompt", exact=True).press("Enter")

    columns = page.get_by_test_id("compare-column")
    expect(columns).to_have_count(2)
    # Both columns fill at once before either is done.
    page.wait_for_function(
        "[...document.querySelectorAll('.pg-column .pg-text')].every((e) => e.textContent.length > 10)"
        " && document.querySelectorAll('.pg-column.pg-streaming').length === 2"
    )
    screenshot(page, "compare-streaming")
    for i in range(2):
        expect(columns.nth(i).get_by_test_id("run-meta")).to_be_visible(timeout=20_000)
        expect(columns.nth(i).get_by_test_id("cost")).to_have_text(re.compile(r"^\$0\.\d+"))
        expect(columns.nth(i).get_by_test_id("latency")).to_have_text(re.compile(r"^\d+ ms$"))
    headings = columns.locator("h3").all_inner_texts()
    assert headings == page.locator("input[name=models]:checked").evaluate_all("els => els.map(e => e.value)")
    screenshot(page, "compare-done")
    page.set_viewport_size({"width": 375, "height": 800})
    assert_fits(page, 375)
    screenshot(page, "compare-phone")
    assert console_errors == []


def _red_png(path: Path) -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (210, 30, 30)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def test_an_image_appears_upscales_and_can_be_asked_about(
    page: Page, server: LiveServer, screenshot: Screenshots, console_errors: list[str], tmp_path: Path
) -> None:
    sign_in(page, server, account(server))
    page.goto(server.url + "/playground/image/")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
    page.get_by_label("Size").select_option("256x256")
    page.get_by_label("Images").fill("2")
    page.get_by_role("button", name="Generate").click()

    gallery = page.get_by_test_id("gallery")
    images = gallery.locator("img")
    expect(images).to_have_count(2)
    page.wait_for_function(
        "[...document.querySelectorAll('.pg-gallery img')].every((i) => i.complete && i.naturalWidth === 256)"
    )
    expect(page.get_by_test_id("run-meta").first.get_by_test_id("cost")).to_have_text("$0.004")
    screenshot(page, "image-gallery")

    gallery.get_by_role("button", name="Upscale ×2").first.click()
    upscaled = page.get_by_test_id("upscaled")
    expect(upscaled.get_by_test_id("new-size")).to_have_text("512×512")
    page.wait_for_function(
        "(() => { const i = document.querySelector('.pg-upscaled img'); return i && i.complete && i.naturalWidth === 512; })()"
    )
    screenshot(page, "image-upscaled")

    page.locator("#pg-vision-file").set_input_files(str(_red_png(tmp_path / "red.png")))
    expect(page.get_by_text("red.png")).to_be_visible()
    page.get_by_label("Question").fill("What colour is this?")
    page.get_by_role("button", name="Ask").click()
    answer = page.get_by_test_id("vision-answer")
    expect(answer).to_contain_text(re.compile("red", re.I))
    expect(answer.get_by_test_id("run-meta")).to_be_visible()
    screenshot(page, "image-vision")
    page.set_viewport_size({"width": 375, "height": 800})
    assert_fits(page, 375)
    screenshot(page, "image-phone")
    assert console_errors == []


def test_the_cost_view_shows_a_sortable_table_a_chart_and_real_runs(
    page: Page, server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    sign_in(page, server, account(server))
    open_playground(page, server)
    page.get_by_label("Model").select_option("sandbox-chat-mini")
    page.get_by_label("Max tokens").fill("20")
    page.get_by_label("Message").fill("Tell me about lighthouses.")
    page.get_by_label("Message").press("Enter")
    expect(page.get_by_test_id("run-meta")).to_be_visible(timeout=20_000)

    page.get_by_role("navigation", name="Playground").get_by_role("link", name="Cost").click()
    page.get_by_role("button", name="Use my last Chat conversation").click()
    expect(page.get_by_text("Using your last Chat conversation (2 messages)")).to_be_visible()
    page.get_by_label("Expected output tokens").fill("400")
    page.get_by_role("button", name="Estimate").click()

    table = page.get_by_test_id("cost-table")
    expect(table).to_be_visible()
    rows = table.locator("tbody tr")
    assert rows.count() >= 3
    estimates = [float(v) for v in rows.evaluate_all("rows => rows.map(r => r.dataset.estimate)")]
    assert estimates == sorted(estimates)  # cheapest first
    expect(page.get_by_test_id("cost-chart").locator(".pg-bar")).to_have_count(rows.count())
    screenshot(page, "cost-table")

    table.get_by_role("button", name="Estimated").click()  # sort: most expensive first
    resorted = [float(v) for v in rows.evaluate_all("rows => rows.map(r => r.dataset.estimate)")]
    assert resorted == sorted(estimates, reverse=True)
    expect(table.locator("th[aria-sort=descending]")).to_have_count(1)

    rows.filter(has_text="sandbox-chat-mini").get_by_role("checkbox").check()
    page.get_by_role("button", name="Run for real").click()
    actual = page.get_by_test_id("actual")
    expect(actual).to_have_count(1, timeout=20_000)
    expect(actual).to_have_text(re.compile(r"^\$0\.\d+"))
    expect(page.locator(".pg-bar-actual")).to_have_count(1)
    screenshot(page, "cost-run-for-real")
    page.set_viewport_size({"width": 375, "height": 800})
    assert_fits(page, 375)
    screenshot(page, "cost-phone")
    assert console_errors == []


def test_without_a_socket_chat_says_so_and_answers_whole(
    page: Page, server: LiveServer, screenshot: Screenshots
) -> None:
    sign_in(page, server, account(server))
    page.route_web_socket(re.compile(r".*/ws/playground/$"), lambda ws: ws.close())
    page.goto(server.url + "/playground/")
    expect(page.locator("[data-socket-status]")).to_have_text(re.compile("^Live connection unavailable"))
    page.get_by_label("Model").select_option("sandbox-chat")
    page.get_by_label("Max tokens").fill("30")
    page.get_by_label("Message").fill("Hello without a socket")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".pg-assistant").last
    expect(reply.get_by_test_id("run-meta")).to_be_visible(timeout=20_000)
    assert len(reply.locator(".pg-text").inner_text()) > 10
    screenshot(page, "chat-without-socket")


def test_a_402_shows_the_shortfall_and_one_click_tops_up_through_checkout_and_back(
    page: Page, server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    sign_in(page, server, account(server, credit_usd=None))
    open_playground(page, server)
    page.get_by_label("Model").select_option("sandbox-chat-pro")
    page.get_by_label("Message").fill("Hello")
    page.get_by_label("Message").press("Enter")

    error = page.get_by_test_id("error")
    expect(error).to_contain_text("Not enough credit")
    expect(error.get_by_test_id("available-credit")).to_have_text("$0.00")
    expect(error.get_by_test_id("required")).to_have_text(re.compile(r"^\$0\.\d+"))
    topup = error.get_by_role("button", name=re.compile(r"^Top up \$\d+"))
    expect(topup).to_be_visible()
    expect(page.get_by_label("Message")).to_have_value("Hello")  # the prompt is given back
    screenshot(page, "chat-402")

    page.goto(server.url + "/playground/image/")
    page.get_by_label("Prompt", exact=True).fill("a tree")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_test_id("error").locator("input[name=return_to]")).to_have_value("/playground/image/")
    screenshot(page, "image-402")

    open_playground(page, server)
    page.get_by_label("Model").select_option("sandbox-chat-pro")
    page.get_by_label("Message").fill("Hello")
    page.get_by_label("Message").press("Enter")
    assert console_errors == []
    # One click goes straight to Stripe Checkout (the stand-in's Pay page here) for the suggested amount.
    page.get_by_test_id("error").get_by_role("button", name=re.compile(r"^Top up \$5")).click()
    expect(page).to_have_url(re.compile(r"/pay/"))
    expect(page.locator("body")).to_contain_text("$5.00")
    screenshot(page, "checkout-from-402")
    page.get_by_role("button", name=re.compile("^Pay")).first.click()
    console_errors.clear()  # what the stand-in's own page logs (it plays Stripe) is not the console's
    # Back where the user was, with the credit there.
    expect(page.get_by_role("link", name="Continue where you were")).to_have_attribute("href", "/playground/")
    expect(page.get_by_test_id("balance")).to_have_text("$5.00")
    screenshot(page, "back-after-paying")
    assert console_errors == []
