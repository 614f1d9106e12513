"""Every console page in a real browser, at a phone's width and a desktop's: it loads without a
JavaScript error, fits the screen, has its heading, and can be used from the keyboard (a skip
link past the sidebar, a visible focus ring). Screenshots of each land in build/screenshots/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.browser.test_playground import account, assert_fits, expect, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import LiveServer, Screenshots

pytestmark = pytest.mark.browser

# (path, the page's <h1>)
SIGNED_IN_PAGES = [
    ("/", "Dashboard"),
    ("/playground/", "Playground"),
    ("/playground/compare/", "Playground"),
    ("/playground/image/", "Playground"),
    ("/playground/video/", "Playground"),
    ("/playground/voice/", "Playground"),
    ("/playground/cost/", "Playground"),
    ("/keys/", "Keys"),
    ("/byok/", "Bring your own key"),
    ("/billing/", "Billing"),
    ("/usage/", "Usage"),
    ("/jobs/", "Jobs"),
    ("/projects/", "Projects"),
]
WIDTHS = (375, 1280)


def console_errors_of(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def focus_ring(page: Page) -> str:
    """The focused element's outline or shadow, as computed: 'none' means the user cannot see it."""
    return page.evaluate(
        """() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
            return outline || style.boxShadow !== 'none' ? el.tagName : 'none';
        }"""
    )


def test_every_console_page_loads_fits_a_phone_and_works_from_the_keyboard(
    page: Page, console_server: LiveServer, screenshot: Screenshots
) -> None:
    errors = console_errors_of(page)
    sign_in(page, console_server, account(console_server))
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        for path, heading in SIGNED_IN_PAGES:
            page.goto(console_server.url + path)
            expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()
            assert_fits(page, width)
            screenshot(page, f"{width}px{path.replace('/', '-')}")

    # Keyboard: the first Tab offers the skip link; following it puts focus in the page itself.
    page.set_viewport_size({"width": 1280, "height": 800})
    for path, _ in SIGNED_IN_PAGES:
        page.goto(console_server.url + path)
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        expect(skip).to_be_focused()
        assert focus_ring(page) != "none", f"the skip link on {path} shows no focus"
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        inside_main = page.evaluate("document.querySelector('main').contains(document.activeElement)")
        assert inside_main, f"after skipping, Tab on {path} left the page's content"
        assert focus_ring(page) != "none", f"the first control of {path} shows no focus ring"
    assert errors == [], f"console errors: {errors}"


def test_signed_out_pages_fit_a_phone(page: Page, console_server: LiveServer, screenshot: Screenshots) -> None:
    errors = console_errors_of(page)
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/login/", "/v1/docs"):
        page.goto(console_server.url + path)
        expect(page.get_by_role("heading", level=1).first).to_be_visible()
        assert_fits(page, 375)
        screenshot(page, f"signed-out{path.replace('/', '-')}")
    assert errors == [], f"console errors: {errors}"
