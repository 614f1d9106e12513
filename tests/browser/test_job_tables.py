"""The Jobs pages in a real browser: a batch and a video submitted through /v1 with a project key
appear in the table and reach their final state without a reload (by polling on SQLite, live over
/ws/events/ with PostgreSQL + Redis), a cancel through the confirmation dialog, the detail pages,
a phone-width screen, and the pages without JavaScript or without websockets.

The live server is conftest's `console_server`: daphne plus one `manage.py db_worker`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.browser.conftest import REPO, LiveServer
from tests.browser.test_playground import assert_fits, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.browser.conftest import Screenshots

pytestmark = pytest.mark.browser

# A worker on a loaded machine: a job that takes seconds may take many more.
SETTLE_MS = 60_000
LIVE = bool(os.environ.get("REDIS_URL"))
MODE = "Live" if LIVE else "Refreshing every 5 s"
RERANK = {"capability": "rerank", "body": {"query": "cats", "documents": ["a cat sat", "tax law", "dogs"]}}
TTS = {"capability": "tts", "body": {"input": "Hello from a batch on the jobs page.", "format": "wav"}}


def expect(target: object):  # noqa: ANN201
    """Playwright's `expect`, imported late: collecting these tests must not need Playwright."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)  # type: ignore[call-overload]


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def manage(server: LiveServer, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=REPO, env=server.env, check=True, capture_output=True, text=True
    )
    return done.stdout


def account_with_key(server: LiveServer) -> tuple[str, str]:
    email = f"jobs-{uuid.uuid4().hex[:12]}@example.com"
    manage(server, "create_account", email, "--credit-usd", "5")
    key = manage(server, "create_project_key", email).strip().splitlines()[-1]
    return email, key


def api(server: LiveServer, key: str, path: str, body: dict) -> dict:
    response = httpx.post(f"{server.url}/v1{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code in (200, 202), response.text
    return response.json()


def row(page: Page, job_id: str):  # noqa: ANN201
    return page.locator(f'tr[data-job-id="{job_id}"]')


def open_jobs(page: Page, server: LiveServer) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.locator("[data-live-status]")).to_have_text(re.compile(MODE))


def test_a_batch_and_a_video_reach_their_end_in_the_table_without_a_reload(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    server = console_server
    email, key = account_with_key(server)
    sign_in(page, server, email)
    open_jobs(page, server)
    expect(page.get_by_text("No jobs yet")).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")
    screenshot(page, "empty")

    batch = api(server, key, "/ai/batch/submit", {"requests": [TTS, RERANK, TTS, RERANK], "metadata": {"run": "b1"}})
    clip = api(server, key, "/video/generate", {"prompt": "a paper boat on a pond", "duration_seconds": 3})
    batch_row, video_row = row(page, batch["batch_id"]), row(page, clip["job_id"])
    expect(batch_row).to_be_visible(timeout=SETTLE_MS)
    expect(video_row).to_be_visible(timeout=SETTLE_MS)
    screenshot(page, "submitted")

    expect(batch_row.locator("[data-state]")).to_have_text("completed", timeout=SETTLE_MS)
    expect(batch_row).to_contain_text("4 of 4 done")
    expect(batch_row.locator("progress")).to_have_attribute("value", "100")
    expect(video_row.locator("[data-state]")).to_have_text("succeeded", timeout=SETTLE_MS)
    expect(video_row.get_by_role("link", name=f"Download video {clip['job_id']}")).to_be_visible()
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    cost = batch_row.locator("[data-cost]").inner_text()
    assert re.fullmatch(r"\$\d+\.\d+", cost) and cost != "$0.00"
    screenshot(page, "finished")

    # The batch's page: counts, cost and its results, one row per item.
    batch_row.get_by_role("link", name=batch["batch_id"], exact=True).click()
    expect(page.get_by_role("heading", name=re.compile("Batch"))).to_contain_text(batch["batch_id"])
    expect(page.locator("[data-counts]")).to_contain_text("4 in all: 4 completed")
    expect(page.locator("[data-cost]")).to_have_text(cost)
    expect(page.locator("tr[data-item]")).to_have_count(4)
    expect(page.get_by_role("link", name="Audio")).to_have_count(2)
    screenshot(page, "batch-page")

    # Export through the dialog, then the file is linked on the page.
    page.get_by_role("link", name=f"Export batch {batch['batch_id']}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Export the results of batch {batch['batch_id']}?")
    dialog.get_by_label("CSV").check()
    screenshot(page, "export-dialog")
    dialog.get_by_role("button", name="Export").click()
    expect(page.locator(".flash")).to_contain_text("ready (CSV, 4 items)")
    link = page.get_by_role("link", name="CSV, 4 items")
    export = httpx.get(link.get_attribute("href") or "", timeout=30)
    assert export.status_code == 200 and export.text.startswith("index,conversation_id,capability,state")

    # The video's page plays the clip.
    page.goto(f"{server.url}/jobs/video/{clip['job_id']}/")
    player = page.locator("video")
    expect(player).to_be_visible()
    source = player.get_attribute("src") or ""
    assert source.startswith(f"{server.url}/files/")
    assert httpx.get(source, timeout=30).headers["content-type"] == "video/mp4"
    page.wait_for_function("document.querySelector('video').readyState >= 1", timeout=15_000)
    duration = page.evaluate("document.querySelector('video').duration")
    assert 2.5 <= duration <= 3.5, duration
    expect(page.get_by_text("sandbox (simulated)")).to_be_visible()
    screenshot(page, "video-page")
    assert console_errors == []


def test_cancel_asks_in_a_dialog_then_the_row_shows_the_cancel(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    server = console_server
    email, key = account_with_key(server)
    sign_in(page, server, email)
    # Ten seconds of video at the sandbox's pace: long enough to cancel while it renders.
    clip = api(server, key, "/video/generate", {"prompt": "a slow sunrise", "duration_seconds": 10})
    open_jobs(page, server)
    video_row = row(page, clip["job_id"])
    cancel = video_row.get_by_role("link", name=f"Cancel video {clip['job_id']}")

    # Keyboard: Enter opens the dialog, Escape closes it and nothing happened.
    cancel.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Cancel video job {clip['job_id']}?")
    screenshot(page, "dialog")
    expect(dialog.get_by_role("link", name="Go back")).to_be_focused()  # Enter alone changes nothing
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(cancel).to_be_focused()
    expect(video_row.locator("[data-state]")).to_have_text(re.compile("queued|running"))

    cancel.click()
    dialog.get_by_role("button", name="Cancel the job").click()
    expect(page.locator(".flash")).to_contain_text(f"Video job {clip['job_id']} cancelled")
    expect(row(page, clip["job_id"]).locator("[data-state]")).to_have_text("cancelled")
    expect(row(page, clip["job_id"])).to_contain_text("not charged")
    screenshot(page, "cancelled")
    status = httpx.get(f"{server.url}/v1/video/status/{clip['job_id']}", headers={"Authorization": f"Bearer {key}"})
    assert status.json()["state"] == "cancelled"
    assert console_errors == []


def test_the_table_reads_on_a_phone_and_filters_by_the_query_string(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    server = console_server
    email, key = account_with_key(server)
    batch = api(server, key, "/ai/batch/submit", {"requests": [RERANK], "metadata": {"team": "phones"}})
    clip = api(server, key, "/video/generate", {"prompt": "rain on a window", "duration_seconds": 1})
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, server, email)
    page.goto(f"{server.url}/jobs/?kind=video")
    expect(row(page, clip["job_id"])).to_be_visible()
    expect(row(page, batch["batch_id"])).to_have_count(0)
    page.get_by_label("Kind").select_option("batch")
    page.get_by_label("Search").fill("phones")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"kind=batch.*q=phones"))
    expect(row(page, batch["batch_id"])).to_be_visible()
    expect(row(page, clip["job_id"])).to_have_count(0)
    assert_fits(page, 390)
    screenshot(page, "phone")
    assert console_errors == []


def test_without_websockets_the_table_polls_and_still_updates(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    server = console_server
    email, key = account_with_key(server)
    page.add_init_script("delete window.WebSocket")
    sign_in(page, server, email)
    page.goto(f"{server.url}/jobs/")
    expect(page.locator("[data-live-status]")).to_have_text("Refreshing every 5 s")
    batch = api(server, key, "/ai/batch/submit", {"requests": [RERANK, RERANK]})
    expect(row(page, batch["batch_id"]).locator("[data-state]")).to_have_text("completed", timeout=SETTLE_MS)
    screenshot(page, "polled")
    assert console_errors == []


def test_without_javascript_the_pages_show_the_jobs_and_confirm_on_a_page(
    browser: Browser, console_server: LiveServer, screenshot: Screenshots
) -> None:
    server = console_server
    email, key = account_with_key(server)
    clip = api(server, key, "/video/generate", {"prompt": "a slow tide", "duration_seconds": 10})
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        sign_in(page, server, email)
        page.goto(f"{server.url}/jobs/")
        expect(row(page, clip["job_id"])).to_contain_text("a slow tide")
        expect(page.locator("[data-live-status]")).to_have_text("Refreshing every 5 s")  # a <noscript> refresh
        row(page, clip["job_id"]).get_by_role("link", name=f"Cancel video {clip['job_id']}").click()
        expect(page.get_by_role("heading", name=f"Cancel video job {clip['job_id']}?")).to_be_visible()
        screenshot(page, "confirm-page")
        page.get_by_role("button", name="Cancel the job").click()
        expect(page.locator(".flash")).to_contain_text("cancelled")
        expect(row(page, clip["job_id"]).locator("[data-state]")).to_have_text("cancelled")
        screenshot(page, "after-cancel")
    finally:
        context.close()
