"""Browser tests: Playwright driving Debian's Chromium against pytest-django's live server."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Playwright's sync API runs an event loop in the test thread; the test's own ORM calls there
# are still synchronous, so Django's async guard does not apply.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser_instance():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is not installed: apt-get install chromium (bin/test does this)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser_instance, live_server):
    context = browser_instance.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    _retry_aborted_navigation(page)
    yield page
    context.close()


def _retry_aborted_navigation(page) -> None:
    """Job pages reload themselves when a job finishes; a test navigating away at that moment
    sees net::ERR_ABORTED. Going to the page again is what a person would do."""
    from playwright.sync_api import Error as PlaywrightError

    original = page.goto

    def goto(url: str, **kwargs):
        for attempt in range(3):
            try:
                return original(url, **kwargs)
            except PlaywrightError as exc:
                if "ERR_ABORTED" not in str(exc) or attempt == 2:
                    raise
                page.wait_for_timeout(500)
        return None

    page.goto = goto
