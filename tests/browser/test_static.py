"""The chat page's files, served by the app itself (no browser needed)."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from quart_chat import create_app
from quart_chat.config import Settings

STATIC = resources.files("quart_chat").joinpath("static")
FILES = ("index.html", "app.js", "style.css")


async def test_page_and_assets_are_served():
    """``GET /`` is the page; its script and stylesheet are served under /static."""
    app = create_app(Settings())
    async with app.test_app() as test_app:
        client = test_app.test_client()
        page = await client.get("/")
        assert page.status_code == 200
        assert page.content_type.startswith("text/html")
        html = (await page.get_data()).decode()
        assert 'data-auth="name"' in html
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            response = await client.get(asset)
            assert response.status_code == 200, asset


async def test_page_asks_for_a_token_when_the_server_needs_one():
    """With a JWT secret the page is told to ask for a token instead of a name."""
    app = create_app(Settings(jwt_secret="static-test-secret-0123456789abcdef"))
    async with app.test_app() as test_app:
        html = (await (await test_app.test_client().get("/")).get_data()).decode()
    assert 'data-auth="token"' in html


@pytest.mark.parametrize("name", FILES)
def test_page_fetches_nothing_from_the_network(name):
    """No CDN, font or other absolute URL: the page works offline."""
    text = STATIC.joinpath(name).read_text("utf-8")
    urls = [u for u in re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}", text)]
    assert urls == []
    assert "@import" not in text


def test_script_never_uses_innerhtml():
    """User data reaches the page only through textContent."""
    script = STATIC.joinpath("app.js").read_text("utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
