"""The playground's Video tab in a real browser: a job appears at once, its progress moves live
(over /ws/events/ with Redis, else by polling), and it ends playable in the page, no reload.

The live server is conftest's `console_server` (daphne plus a `db_worker`); the sandbox renders at
its default pace (24 frames a second of wall time), so a 6 s clip takes about 6 s to make.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.browser.conftest import REPO
from tests.browser.test_playground import account, assert_fits, console_errors, expect, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import LiveServer, Screenshots

pytestmark = pytest.mark.browser

__all__ = ["console_errors"]  # the fixture, imported for this module's tests

# Every state and progress a job row shows, as the page goes (rows are replaced when their state
# changes, so a MutationObserver on the whole document sees each version).
RECORD_ROWS = """
window.__videoRows = [];
new MutationObserver(() => {
  for (const row of document.querySelectorAll("[data-job-id]")) {
    const seen = `${row.dataset.state}:${row.dataset.progress}`;
    if (window.__videoRows[window.__videoRows.length - 1] !== seen) window.__videoRows.push(seen);
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state", "data-progress"] });
"""


def project_key(server: LiveServer, email: str) -> str:
    made = subprocess.run(
        [sys.executable, "manage.py", "create_project_key", email],
        cwd=REPO,
        env=server.env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return made.stdout.strip().splitlines()[-1]


def test_a_video_job_appears_at_once_moves_live_and_plays_when_done(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    server = console_server
    page.add_init_script(RECORD_ROWS)
    email = account(server)
    sign_in(page, server, email)
    page.goto(server.url + "/playground/video/")
    expect(page.get_by_role("heading", name="Make a video")).to_be_visible()
    status = page.get_by_test_id("live-status")
    live = bool(os.environ.get("REDIS_URL"))  # the worker's updates reach daphne only through Redis
    if live:
        expect(status).to_have_text(re.compile("^Live"))
    else:
        expect(status).to_have_text(re.compile(r"^Checking every 2 s"))
    expect(page.get_by_text("No videos yet")).to_be_visible()

    page.get_by_label("Prompt").fill("A paper boat drifting down a rainy street")
    page.get_by_label("Model").select_option("sandbox-video")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Duration (seconds)").select_option("6")
    expect(page.get_by_test_id("estimate-cost")).to_have_text("$0.06")
    screenshot(page, "video-form")

    page.evaluate("window.__samePage = true")
    page.get_by_role("button", name="Generate video").click()
    row = page.get_by_test_id("video-job").first
    expect(row).to_be_visible(timeout=5_000)
    expect(row.get_by_test_id("state")).to_have_text(re.compile("^(Queued|Rendering)$"))
    expect(row.get_by_test_id("cost")).to_have_text("$0.06 held")
    expect(page.get_by_text("No videos yet")).to_be_hidden()
    page.get_by_text("View code").click()
    expect(page.locator("#pg-video-code pre:not([hidden]) code")).to_contain_text(
        f"curl {server.url}/v1/video/generate"
    )

    # Rendering, part of the way: seen in the page as it happened.
    page.wait_for_function(
        "window.__videoRows.some(s => { const [state, p] = s.split(':'); return state === 'running' && +p > 0 && +p < 100; })",
        timeout=30_000,
    )
    expect(row.get_by_test_id("state")).to_have_text("Rendering")
    screenshot(page, "video-rendering")

    expect(row.get_by_test_id("state")).to_have_text("Done", timeout=60_000)
    player = row.get_by_test_id("video")
    expect(player).to_be_visible()
    page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=video]'); return v && v.readyState >= 1 && v.duration > 5.5; }",
        timeout=15_000,
    )
    duration = page.evaluate("document.querySelector('[data-testid=video]').duration")
    assert 5.5 < duration < 6.5
    assert player.get_attribute("poster"), "the thumbnail is the poster"
    expect(row.get_by_test_id("cost")).to_have_text("$0.06 charged")
    expect(row.get_by_test_id("vendor")).to_have_text("sandbox")
    expect(row.get_by_test_id("request-id")).to_have_text(re.compile(r"^[0-9a-f-]{36}$"))
    expect(row.get_by_test_id("download")).to_be_visible()
    assert page.evaluate("window.__samePage") is True, "no reload"
    seen = page.evaluate("window.__videoRows")
    assert seen[0].startswith(("queued:", "running:")) and seen[-1] == "succeeded:100", seen
    screenshot(page, "video-done")

    # A job made through the API joins the list: live without a reload, else on the next load.
    made = httpx.post(
        f"{server.url}/v1/video/generate",
        json={"prompt": "Made through the API", "duration_seconds": 1},
        headers={"Authorization": f"Bearer {project_key(server, email)}"},
        timeout=30,
    )
    assert made.status_code == 202, made.text
    if not live:
        page.reload()
    api_row = page.locator(f"[data-job-id='{made.json()['job_id']}']")
    expect(api_row).to_be_visible(timeout=15_000)
    expect(api_row).to_contain_text("Made through the API")
    expect(api_row.get_by_test_id("state")).to_have_text("Done", timeout=30_000)
    expect(page.get_by_test_id("video-job")).to_have_count(2)

    page.set_viewport_size({"width": 375, "height": 800})
    expect(player).to_be_visible()
    assert_fits(page, 375)
    screenshot(page, "video-phone")
    assert console_errors == [], console_errors


def test_the_form_offers_only_what_the_chosen_model_makes_and_keyboard_submits(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    server = console_server
    sign_in(page, server, account(server, credit_usd="0.01"))
    page.goto(server.url + "/playground/video/")
    page.get_by_label("Model").select_option("sandbox-video")
    expect(page.get_by_label("Resolution").locator("option[value='1080p']")).to_be_enabled()
    page.get_by_label("Duration (seconds)").select_option("10")
    expect(page.get_by_test_id("estimate-cost")).to_have_text("$0.10")

    # Keyboard only: type the prompt, Tab to the button, Enter.
    page.get_by_label("Prompt").fill("Waves on a pebble beach")
    page.get_by_role("button", name="Generate video").focus()
    page.keyboard.press("Enter")
    error = page.get_by_test_id("error")
    expect(error).to_contain_text("Not enough credit")
    expect(error.get_by_test_id("required")).to_have_text("$0.10")
    expect(error.get_by_test_id("topup")).to_be_visible()
    expect(page.get_by_test_id("video-job")).to_have_count(0)
    screenshot(page, "video-402")
    assert console_errors == [], console_errors


def test_without_websockets_the_page_says_so_and_polls_the_job_to_its_end(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    server = console_server
    # As on a network that refuses websockets: every attempt fails at once.
    page.add_init_script("window.WebSocket = function () { throw new Error('websockets are blocked here'); };")
    sign_in(page, server, account(server))
    page.goto(server.url + "/playground/video/")
    expect(page.get_by_test_id("live-status")).to_have_text(
        re.compile(r"^(Live updates unavailable: checking|Checking) every 2 s")
    )
    page.get_by_label("Prompt").fill("A lantern swinging in the wind")
    page.get_by_label("Duration (seconds)").select_option("2")
    page.evaluate("window.__samePage = true")
    page.get_by_role("button", name="Generate video").click()
    row = page.get_by_test_id("video-job").first
    expect(row).to_be_visible(timeout=5_000)
    expect(row.get_by_test_id("state")).to_have_text("Done", timeout=60_000)
    expect(row.get_by_test_id("video")).to_be_visible()
    assert page.evaluate("window.__samePage") is True, "no reload"
    screenshot(page, "video-polled")
    assert console_errors == [], console_errors
