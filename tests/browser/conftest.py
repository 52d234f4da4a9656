"""Real Chromium (Debian's /usr/bin/chromium) driven by Playwright's Python package.

Playwright's own browser download is never used. Without Playwright or Chromium these
tests are skipped, unless ``QUART_CHAT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns the
skip into a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 720}
#: Longest wait for anything to appear in a page (a bound, not an assertion on speed).
WAIT_MS = 20_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[browser]')"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip the calling test module without Playwright or Chromium (fail on CI)."""
    missing = _missing()
    if missing:
        if os.environ.get("QUART_CHAT_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing, allow_module_level=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium per test module."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Callable[..., Any]]:
    """``open_page(url, name=...)``: a fresh browser profile with the chat page, logged in.

    Every page must finish without an uncaught JavaScript error or a dialog.
    """
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    contexts: list[Any] = []
    problems: list[str] = []

    def open_page(base_url: str, name: str | None = None, channels: str = "lobby",
                  viewport: dict[str, int] = DESKTOP) -> Any:
        context = chromium.new_context(viewport=viewport, locale="en-US", timezone_id="UTC")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: _console(msg, problems))
        page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"),
                                          dialog.dismiss()))
        page.goto(base_url)
        if name is not None:
            login(page, name, channels)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not problems, problems


def _console(msg: Any, problems: list[str]) -> None:
    """Console errors fail the test (a CSP violation, say), except refused connections,
    which the restart and refusal tests cause on purpose."""
    if msg.type == "error" and "WebSocket connection" not in msg.text:
        problems.append(f"console error: {msg.text}")


def login(page: Any, name: str, channels: str = "lobby") -> None:
    """Fill the name form and wait until the page is subscribed (it lists itself)."""
    from playwright.sync_api import expect

    page.fill("#name", name)
    page.fill("#login-channels", channels)
    page.click("#login-button")
    expect(page.locator("#status")).to_have_attribute("data-state", "online")
    expect(member(page, name)).to_be_visible()


def member(page: Any, name: str) -> Any:
    return page.locator("#members .member-name", has_text=name)


def message(page: Any, text: str) -> Any:
    """The log entry whose text is exactly ``text``."""
    return page.locator("#log .message").filter(
        has=page.locator(".text").get_by_text(text, exact=True)
    )


def send(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def side_by_side(pages: list[Any], path: Path, browser: Any) -> bytes:
    """Screenshot ``pages`` and compose them into one image at ``path``."""
    shots = [base64.b64encode(page.screenshot()).decode() for page in pages]
    images = "".join(f'<img src="data:image/png;base64,{shot}">' for shot in shots)
    html = (
        "<html><body style='margin:0;background:#d9dce8;display:flex;gap:24px;"
        "padding:24px;align-items:flex-start;width:max-content'>"
        f"<style>img{{border-radius:10px;box-shadow:0 6px 24px rgba(0,0,0,.18)}}</style>"
        f"{images}</body></html>"
    )
    context = browser.new_context(viewport={"width": 800, "height": 600})
    try:
        canvas = context.new_page()
        canvas.set_content(html)
        canvas.wait_for_function("[...document.images].every(i => i.complete)")
        path.parent.mkdir(parents=True, exist_ok=True)
        image: bytes = canvas.screenshot(path=str(path), full_page=True)
    finally:
        context.close()
    return image
