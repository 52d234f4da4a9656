"""The chat page in a real Chromium: every promise of the page, with both brokers."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from quart_chat import Rejected, hookimpl
from quart_chat.protocol import Message, new_mid
from quart_chat.testing import ServerThread

from ..wsclient import Client
from .conftest import ARTIFACTS, PHONE, member, message, require_browser, send, side_by_side

require_browser()
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.browser

XSS = ('<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'
       '<b onmouseover="window.__pwned = 3">bold?</b>')


def test_two_pages_chat(server, open_page, chromium, broker, connect):
    """Two pages exchange messages; each marks its own; a screenshot is saved mid-chat."""
    alice = open_page(server.url, "alice", channels="lobby, design, ops")
    bob = open_page(server.url, "bob", viewport=PHONE)
    first = "Hi Bob! Shall we ship the chat page today?"
    send(alice, first)
    expect(message(bob, first)).to_be_visible()
    reply = "Yes, the browser tests are green.\nScreenshots too."
    send(bob, reply)
    expect(message(alice, reply)).to_be_visible()
    send(alice, "Great, merging after lunch.")
    expect(message(bob, "Great, merging after lunch.")).to_be_visible()

    expect(message(alice, first)).to_have_class("message own")
    expect(message(bob, first)).to_have_class("message")
    expect(message(alice, reply).locator(".sender")).to_have_text("bob")
    expect(member(alice, "bob")).to_be_attached()  # presence refreshed for a new sender
    expect(member(bob, "alice")).to_be_attached()

    carol = connect("carol")
    carol.ok("subscribe", channel="design")
    carol.ok("publish", channel="design", text="New mockups are up")
    carol.ok("publish", channel="design", text="Feedback welcome")
    expect(alice.locator("#channels .channel", has_text="design").locator(".unread")
           ).to_have_text("2")
    side_by_side([alice, bob], ARTIFACTS / f"two-pages-{broker}.png", chromium)


def test_message_from_python_client_appears(server, open_page, connect):
    """A message published by a plain WebSocket client shows in the page, not as own."""
    page = open_page(server.url, "alice")
    script = connect("script")
    script.ok("subscribe", channel="lobby")
    script.ok("publish", channel="lobby", text="hello from Python")
    entry = message(page, "hello from Python")
    expect(entry).to_be_visible()
    expect(entry.locator(".sender")).to_have_text("script")
    expect(entry).to_have_class("message")
    pages = [s for s in server.service.sessions if s.client_id == "alice"]
    assert pages and all(s.batch for s in pages)  # the page opts into ?batch=1


def test_html_payload_renders_as_text(server, open_page, connect):
    """HTML and script in a message show literally and run nothing."""
    page = open_page(server.url, "alice")
    script = connect("mallory")
    script.ok("subscribe", channel="lobby")
    script.ok("publish", channel="lobby", text=XSS)
    expect(message(page, XSS)).to_be_visible()
    send(page, XSS)
    expect(message(page, XSS)).to_have_count(2)
    page.hover("#log .message .text >> nth=0")
    assert page.locator("#log img, #log script, #log b").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_channels_and_unread_counts(server, open_page, connect):
    """Joining a channel lists it; messages elsewhere count as unread until opened."""
    page = open_page(server.url, "alice")
    page.fill("#join-input", "#random")
    page.press("#join-input", "Enter")
    expect(page.locator("#channel-title")).to_have_text("#random")
    expect(member(page, "alice")).to_be_visible()
    script = connect("script")
    script.ok("subscribe", channel="lobby")
    for n in range(3):
        script.ok("publish", channel="lobby", text=f"unread {n}")
    lobby = page.locator("#channels .channel", has_text="lobby")
    expect(lobby.locator(".unread")).to_have_text("3")
    lobby.click()
    expect(page.locator("#channel-title")).to_have_text("#lobby")
    expect(message(page, "unread 2")).to_be_visible()
    expect(lobby.locator(".unread")).to_have_count(0)
    page.click("#leave-button")
    expect(page.locator("#channels .channel")).to_have_count(1)
    assert script.ok("presence", channel="lobby")["clients"] == ["script"]


def test_invalid_channel_is_refused_in_place(server, open_page):
    """A bad channel name is explained beside the join box, and nothing is joined."""
    page = open_page(server.url, "alice")
    page.fill("#join-input", "no spaces allowed")
    page.press("#join-input", "Enter")
    expect(page.locator("#join-error")).to_contain_text("A-Z a-z 0-9")
    expect(page.locator("#channels .channel")).to_have_count(1)


class Moderator:
    """A filter that refuses one word."""

    @hookimpl
    def filter_message(self, message: Message) -> Message:
        if "forbidden-word" in message.text:
            raise Rejected("that word is not allowed here")
        return message


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_rejection_by_a_filter_is_shown_in_place(settings, open_page):
    """A message a plugin rejects stays visible as not sent, with the code and reason."""
    with ServerThread(settings, plugins=[Moderator()]) as server:
        page = open_page(server.url, "alice")
        send(page, "this has a forbidden-word in it")
        failed = page.locator("#log .note.failed")
        expect(failed).to_have_attribute("data-code", "rejected")
        expect(failed).to_contain_text("that word is not allowed here")
        expect(failed.locator(".failed-text")).to_have_text("this has a forbidden-word in it")
        send(page, "this one is fine")
        expect(message(page, "this one is fine")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "rejected.png"))


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_rate_limit_is_shown_in_place(settings, open_page):
    """Publishing faster than the limit shows ``rate_limited`` on the refused message."""
    limited = settings.replace(publish_burst=2, publish_rate=0.01)
    with ServerThread(limited) as server:
        page = open_page(server.url, "alice")
        for n in range(3):
            send(page, f"burst {n}")
        expect(page.locator("#log .note.failed")).to_have_attribute("data-code", "rate_limited")
        expect(message(page, "burst 1")).to_be_visible()


class Archive:
    """Serves history from a list, newest last."""

    def __init__(self) -> None:
        ts = time.time() - 3600
        self.messages = [
            Message(channel="lobby", sender="carol", text=f"from the archive {n}",
                    ts=ts + n, mid=new_mid(ts + n))
            for n in range(3)
        ] + [Message(channel="lobby", sender="helper", text="I am a bot", ts=ts + 9,
                     mid=new_mid(ts + 9), bot=True)]

    @hookimpl
    def history(self, channel: str, limit: int) -> list[Message] | None:
        return [m for m in self.messages if m.channel == channel][-limit:]


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_history_loads_when_a_channel_opens(settings, open_page):
    """Recent history shows on join, in order, and bot messages look different."""
    with ServerThread(settings, plugins=[Archive()]) as server:
        page = open_page(server.url, "alice")
        texts = page.locator("#log .message .text")
        expect(texts).to_have_text(
            ["from the archive 0", "from the archive 1", "from the archive 2", "I am a bot"])
        bot = message(page, "I am a bot")
        expect(bot).to_have_class("message bot")
        expect(bot.locator(".badge")).to_have_text("bot")


def test_page_survives_a_server_restart(settings, open_page):
    """After the server restarts, the page reconnects, resubscribes and receives again."""
    first = ServerThread(settings).start()
    port = first.port
    try:
        page = open_page(first.url, "alice", channels="lobby, dev")
        send(page, "before the restart")  # reconnecting then sends subscribe with "since"
        expect(message(page, "before the restart")).to_be_visible()
    finally:
        first.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    expect(page.locator("#banner")).to_contain_text("Reconnecting")
    with ServerThread(settings, port=port) as second:
        expect(page.locator("#status")).to_have_attribute("data-state", "online")
        expect(member(page, "alice")).to_be_visible()
        script = Client(second.ws_url, "script")
        try:
            script.ok("subscribe", channel="dev")
            script.ok("publish", channel="dev", text="after the restart")
            dev = page.locator("#channels .channel", has_text="dev")
            expect(dev.locator(".unread")).to_have_text("1")
            send(page, "lobby still works")
            expect(message(page, "lobby still works")).to_be_visible()
            expect(message(page, "before the restart")).to_have_count(1)
        finally:
            script.close()


@pytest.mark.redis
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_gap_is_shown_after_redis_reconnects(settings, open_page, redis_server):
    """When Redis comes back, the page says messages may have been missed."""
    with ServerThread(settings) as server:
        page = open_page(server.url, "alice")
        redis_server.stop()
        redis_server.start()
        expect(page.locator("#log .note.gap")).to_contain_text("may have been missed")
        send(page, "back again")
        expect(message(page, "back again")).to_be_visible()
        _records_restored(server)


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_token_login(settings, open_page):
    """With a token secret the page asks for a token; the name comes from its ``sub``."""
    secret = "browser-test-secret-0123456789abcdef"
    with ServerThread(settings.replace(jwt_secret=secret)) as server:
        page = open_page(server.url)
        expect(page.locator("#name-field")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "token-login.png"))
        page.fill("#token", "not-a-token")
        page.click("#login-button")
        expect(page.locator("#login-error")).to_contain_text("token was refused")
        page.fill("#token", jwt.encode({"sub": "carol"}, secret, algorithm="HS256"))
        page.click("#login-button")
        expect(page.locator("#me")).to_have_text("carol")
        expect(member(page, "carol")).to_be_visible()


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_an_expired_pasted_token_asks_for_a_new_one(settings, open_page):
    """The pasted token expires (4003): the page says so on the login form; a new token
    takes it back to its channels."""
    secret = "browser-test-secret-0123456789abcdef"
    with ServerThread(settings.replace(jwt_secret=secret)) as server:
        page = open_page(server.url)
        exp = int(time.time()) + 3
        page.fill("#token", jwt.encode({"sub": "carol", "exp": exp}, secret, algorithm="HS256"))
        page.click("#login-button")
        expect(member(page, "carol")).to_be_visible()
        expect(page.locator("#login-error")).to_have_text(
            "Your token expired: paste a new one to continue.")
        assert time.time() >= exp
        page.fill("#token", jwt.encode({"sub": "carol"}, secret, algorithm="HS256"))
        page.click("#login-button")
        expect(page.locator("#status")).to_have_attribute("data-state", "online")
        expect(member(page, "carol")).to_be_visible()
        send(page, "back with a new token")
        expect(message(page, "back with a new token")).to_be_visible()


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_a_token_provider_keeps_the_page_connected_across_expiries(settings, open_page):
    """window.quartChatTokenProvider: no token field; the page refreshes ahead of each
    exp on its own, staying in one session; a narrowed token's channel is left."""
    secret = "browser-test-secret-0123456789abcdef"
    issued: list[int] = []
    channels = [["lobby", "side"]]

    def sign() -> str:
        issued.append(int(time.time()) + 3)
        return jwt.encode({"sub": "dana", "exp": issued[-1], "channels": channels[0]},
                          secret, algorithm="HS256")

    with ServerThread(settings.replace(jwt_secret=secret)) as server:
        page = open_page(server.url)
        page.expose_function("signChatToken", sign)
        page.add_init_script("window.quartChatTokenProvider = () => window.signChatToken();")
        page.reload()
        expect(page.locator("#token-field")).to_be_hidden()
        page.fill("#login-channels", "lobby, side")
        page.click("#login-button")
        expect(member(page, "dana")).to_be_visible()
        (session,) = server.service.sessions
        # past two exps at least (waiting in Playwright, which runs signChatToken meanwhile)
        page.wait_for_timeout(1000 * (max(0.0, issued[0] - time.time()) + 5.0))
        assert issued[-1] - issued[0] >= 4, issued
        assert server.service.sessions == {session}  # refreshed, never reconnected
        send(page, "still here")
        expect(message(page, "still here")).to_be_visible()
        channels[0] = ["lobby"]  # the next refresh drops #side
        expect(page.locator("#error-bar")).to_contain_text("Left #side", timeout=10_000)
        expect(page.locator("#channels .channel-name", has_text="side")).to_have_count(0)
        assert session.channels == {"lobby"}


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_phone_layout_uses_drawers(server, open_page):
    """On a phone-sized window the channel list is a drawer opened by the menu button."""
    page = open_page(server.url, "alice", viewport=PHONE)
    sidebar = page.locator("#sidebar")
    expect(page.locator("#menu-button")).to_be_visible()
    assert not _on_screen(page, "#sidebar")
    page.click("#menu-button")
    expect(sidebar).to_have_css("transform", "none")
    page.fill("#join-input", "phones")
    page.press("#join-input", "Enter")
    expect(page.locator("#channel-title")).to_have_text("#phones")
    expect(page.locator("#scrim")).to_be_hidden()
    page.click("#members-button")
    expect(page.locator("#members-pane")).to_have_css("transform", "none")
    expect(member(page, "alice")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "phone-members.png"))


def _on_screen(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    return box is not None and box["x"] + box["width"] > 0


@pytest.mark.redis
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_page_rejoins_when_redis_comes_back(settings, open_page, redis_server):
    """Connecting while Redis is down shows a notice; the page joins once Redis is back."""
    with ServerThread(settings) as server:
        page = open_page(server.url)
        redis_server.stop()
        page.fill("#name", "alice")
        page.click("#login-button")
        expect(page.locator("#log .note.gap")).to_contain_text("cannot reach its broker")
        redis_server.start()
        expect(member(page, "alice")).to_be_visible()
        script = Client(server.ws_url, "script")
        try:
            script.ok("subscribe", channel="lobby")
            script.ok("publish", channel="lobby", text="redis is back")
        finally:
            script.close()
        expect(message(page, "redis is back")).to_be_visible()
        _records_restored(server)


def _records_restored(server: ServerThread) -> None:
    """Wait (bounded) until the service restored its Redis records after a reconnect:
    its shutdown does not wait for that task, which would then die with the loop."""
    for _ in range(200):
        if not server.service._background:
            return
        time.sleep(0.05)
    raise AssertionError("records were never restored")
