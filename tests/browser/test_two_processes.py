"""Two server processes sharing one real Redis, a browser page on each."""

from __future__ import annotations

import pytest

from quart_chat.testing import ServerProcess

from ..wsclient import Client
from .conftest import ARTIFACTS, PHONE, member, message, require_browser, send, side_by_side

require_browser()
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.redis]


def test_pages_on_two_processes_chat_through_redis(redis_url, open_page, chromium):
    """Pages served by different processes see each other's messages and presence."""
    env = {"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_REDIS_PROBE_INTERVAL": "0.2"}
    with ServerProcess(env) as one, ServerProcess(env) as two:
        alice = open_page(one.url, "alice", channels="lobby, ops")
        bob = open_page(two.url, "bob", viewport=PHONE, channels="lobby, ops")
        send(alice, "Hello from process one")
        expect(message(bob, "Hello from process one")).to_be_visible()
        send(bob, "And hello back from process two")
        expect(message(alice, "And hello back from process two")).to_be_visible()
        expect(member(alice, "bob")).to_be_attached()

        script = Client(one.ws_url, "deploy-bot")
        try:
            script.ok("subscribe", channel="ops")
            script.ok("publish", channel="ops", text="deploy finished")
        finally:
            script.close()
        ops = bob.locator("#channels .channel", has_text="ops")
        expect(ops.locator(".unread")).to_have_text("1")
        side_by_side([alice, bob], ARTIFACTS / "two-processes-redis.png", chromium)


def test_member_lists_follow_join_and_leave_across_processes(redis_url, open_page):
    """With join/leave on, a page's member list follows joins and leaves on the other
    process at once (the presence poll is 15 s apart: the frames do it)."""
    env = {"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_REDIS_PROBE_INTERVAL": "0.2",
           "QUART_CHAT_JOIN_LEAVE": "true"}
    with ServerProcess(env) as one, ServerProcess(env) as two:
        alice = open_page(one.url, "alice", channels="lobby")
        bob = Client(two.ws_url, "bob")
        try:
            bob.ok("subscribe", channel="lobby")
            expect(member(alice, "bob")).to_be_visible(timeout=5000)
            bob.ok("unsubscribe", channel="lobby")
            expect(member(alice, "bob")).to_have_count(0, timeout=5000)
            bob.ok("subscribe", channel="lobby")
            expect(member(alice, "bob")).to_be_visible(timeout=5000)
        finally:
            bob.close()
        expect(member(alice, "bob")).to_have_count(0, timeout=5000)
