"""start_server in a notebook: one server per name, however often a cell runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quart_chat import hookimpl
from quart_chat.embedded import start_redis, start_server
from quart_chat.protocol import Message

from .helpers import wait_until


class Shout:
    @hookimpl
    def filter_message(self, message: Message) -> Message:
        return message.replace(text=message.text.upper())


@pytest.fixture(autouse=True)
def no_external_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("QUART_CHAT_SERVER_URL", raising=False)
    yield


def test_running_the_same_cell_again_returns_the_running_server() -> None:
    first = start_server("same", log_level="critical")
    try:
        again = start_server("same", log_level="critical")
        assert again is first and again.url == first.url and again.running
    finally:
        first.stop()
    assert not first.running


def test_a_changed_plugin_replaces_the_server_on_the_same_address() -> None:
    """Clients made through the old server reconnect to the new one and see the change."""
    server = start_server("edited", log_level="critical")
    try:
        alice = server.client("alice", reconnect_delay=0.05)
        alice.subscribe("lobby")
        url = server.url
        assert start_server("edited", plugins=[Shout()], log_level="critical") is server
        assert server.url == url
        wait_until(lambda: alice.reconnects == 1 and alice.connected, 10.0)
        alice.publish("lobby", "quiet")
        assert alice.receive(timeout=5).text == "QUIET"
    finally:
        server.stop()


def test_a_server_process_can_be_killed_and_restarted() -> None:
    redis = start_redis("embedded-test")
    assert start_redis("embedded-test") is redis
    server = start_server("proc", process=True, redis_url=redis.url, log_level="critical")
    try:
        assert "process" in repr(server) and not server.embedded
        alice = server.client("alice", reconnect_delay=0.05)
        alice.subscribe("lobby")
        server.kill()
        assert not server.running
        wait_until(lambda: alice.state == "reconnecting", 10.0)
        server.restart()
        wait_until(lambda: alice.connected, 20.0)
        assert alice.channels() == ["lobby"]
    finally:
        server.stop()
        redis.stop()
