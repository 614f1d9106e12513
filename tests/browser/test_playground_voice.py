"""The Voice tab in headless Chromium, with a WAV file as the microphone: Start -> the spoken
question appears as a transcript line, the assistant's reply arrives as text and plays as audio,
each turn shows its cost -> Hang up shows what the session cost.

The WAV is made at test time with the sandbox's espeak-ng: the question, then a second of quiet
(Chromium loops the file, so the quiet is what ends each turn).
"""

from __future__ import annotations

import re
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, LiveServer
from tests.browser.test_playground import account, assert_fits, expect, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

    from tests.browser.conftest import Screenshots

pytestmark = pytest.mark.browser

QUESTION = "what is the weather today"
MIC_RATE = 48_000


def speech_wav(path: Path, text: str) -> Path:
    from gateway.sandbox import speech

    said = speech.synthesize(text, None, 1.0, "wav")
    samples, rate = speech.decode_audio(said.audio)
    mono = speech.resample(samples.mean(axis=1), rate, MIC_RATE)
    quiet = np.random.default_rng(1).standard_normal(MIC_RATE) * 0.001  # a room, not digital silence
    pcm = (np.clip(np.concatenate([quiet[: MIC_RATE // 4], mono, quiet]), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(tmp_path_factory.mktemp("voice") / "question.wav", QUESTION)


@pytest.fixture(scope="module")
def browser(playwright: Playwright, microphone_wav: Path) -> Iterator[Browser]:
    """Chromium whose microphone is the WAV file, allowed without a prompt."""
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav}",
    ]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
    yield browser
    browser.close()


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def test_a_spoken_turn_is_transcribed_answered_aloud_and_the_session_cost_shown(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    assert CHROMIUM.exists()
    sign_in(page, console_server, account(console_server))
    page.goto(console_server.url + "/playground/voice/")
    expect(page.get_by_role("heading", name="Talk to the assistant")).to_be_visible()
    expect(page.get_by_role("button", name="Hang up")).to_be_disabled()
    screenshot(page, "voice-ready-to-start")

    page.get_by_label("Voice", exact=True).select_option("nova")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("[data-voice-status]")).to_have_text(re.compile("^Live"))
    expect(page.get_by_role("button", name="Hang up")).to_be_enabled()
    expect(page.get_by_role("button", name="Hold to talk")).to_be_focused()  # Space talks from here
    page.wait_for_function("Number(document.querySelector('[data-level]').value) > 0.05", timeout=15_000)

    user_turn = page.get_by_test_id("user-turn").first
    expect(user_turn).to_contain_text(re.compile("weather|today"), timeout=60_000)
    reply = page.get_by_test_id("assistant-turn").first
    expect(reply).to_contain_text("sandbox", timeout=60_000)  # the simulated reply says so
    expect(reply.locator("audio")).to_have_count(1, timeout=60_000)
    # The reply is playing (or has played): the browser decoded the WAV and moved its clock.
    page.wait_for_function(
        "(() => { const a = document.querySelector('[data-testid=assistant-turn] audio');"
        " return a && a.duration > 0.5 && a.currentTime > 0; })()",
        timeout=15_000,
    )
    expect(reply.get_by_test_id("turn-cost")).to_contain_text(re.compile(r"\$0\.0\d+"), timeout=15_000)
    expect(page.locator("[data-session-cost]")).to_have_text(re.compile(r"^≈ \$0\.\d+"))
    screenshot(page, "voice-turn-answered")

    # Push-to-talk from the keyboard: holding Space marks the talk button pressed, letting go
    # sends the turn at once (the looping file goes on talking either way).
    talk = page.get_by_role("button", name="Hold to talk")
    expect(talk).to_be_focused()
    page.keyboard.down(" ")
    expect(talk).to_have_attribute("aria-pressed", "true")
    page.keyboard.up(" ")
    expect(talk).to_have_attribute("aria-pressed", "false")

    page.get_by_role("button", name="Hang up").click()
    summary = page.get_by_test_id("session-summary")
    # Generous: the looping file may have started another turn, and the sandbox's recogniser and
    # chat engine hold the server's event loop for seconds on a loaded machine.
    expect(summary).to_contain_text("You hung up.", timeout=30_000)
    cost = summary.get_by_test_id("session-cost")
    expect(cost).to_have_text(re.compile(r"^\$0\.\d+$"))
    assert float(cost.inner_text().lstrip("$")) > 0
    expect(page.locator("[data-session-cost]")).to_have_text(cost.inner_text())
    expect(page.get_by_role("button", name="Start")).to_be_enabled()
    assert page.evaluate("[...document.querySelectorAll('.pg-log audio')].every((a) => a.paused)")
    screenshot(page, "voice-hung-up")

    page.get_by_text("View code").click()
    code = page.locator(".pg-code pre:not([hidden]) code")
    expect(code).to_contain_text(f"{console_server.url}/v1/ai/voice/session")
    page.get_by_role("button", name="Python").click()
    expect(page.locator(".pg-code pre:not([hidden]) code")).to_contain_text("websockets.connect(")

    page.set_viewport_size({"width": 375, "height": 800})
    expect(page.get_by_role("button", name="Start")).to_be_visible()
    assert_fits(page, 375)
    screenshot(page, "voice-phone")
    assert console_errors == []


def test_a_session_without_credit_shows_the_top_up_box(
    page: Page, console_server: LiveServer, screenshot: Screenshots, console_errors: list[str]
) -> None:
    sign_in(page, console_server, account(console_server, credit_usd=None))
    page.goto(console_server.url + "/playground/voice/")
    page.get_by_role("button", name="Start").click()
    error = page.get_by_test_id("error")
    expect(error).to_contain_text("Not enough credit")
    expect(error.get_by_test_id("topup")).to_be_visible()
    expect(page.get_by_role("button", name="Start")).to_be_enabled()
    screenshot(page, "voice-402")
    # The token endpoint's 402 is the one logged line a refused fetch makes; nothing else.
    assert all("402" in line for line in console_errors)
