"""join / leave frames (QUART_CHAT_JOIN_LEAVE): to a channel's subscribers, across
processes through the broker, for unsubscribes, disconnects and dead processes."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from quart_chat import Settings, hookimpl
from quart_chat.testing import ServerProcess, ServerThread

from .wsclient import Client

Frame = dict[str, Any]


def membership(client: Client, kind: str) -> Frame:
    """The next ``join`` or ``leave`` frame ``client`` receives, without its type."""
    frame = client.next(kind)
    assert set(frame) == {"type", "channel", "client_id", "session"}, frame
    return {"channel": frame["channel"], "client_id": frame["client_id"],
            "session": frame["session"]}


def seen(client: Client, kind: str) -> list[Frame]:
    """Every ``kind`` frame that reached ``client`` before a ping's answer."""
    client.ok("ping")
    return [frame for frame in client.inbox if frame["type"] == kind]


def who(client: Client, channel: str) -> Frame:
    return {"channel": channel, "client_id": client.welcome["client_id"],
            "session": client.welcome["session"]}


def test_join_and_leave_reach_every_subscriber_of_the_channel(make_server):
    """Subscribe: everyone in the channel (the joiner too) hears ``join``; unsubscribe
    and disconnect: the others hear ``leave``; other channels hear nothing."""
    server = make_server(join_leave=True)
    alice, bob, carol = (Client(server.ws_url, name) for name in ("alice", "bob", "carol"))
    carol.ok("subscribe", channel="elsewhere")
    alice.ok("subscribe", channel="lobby")
    assert membership(alice, "join") == who(alice, "lobby")
    bob.ok("subscribe", channel="lobby")
    assert membership(alice, "join") == membership(bob, "join") == who(bob, "lobby")
    bob.ok("unsubscribe", channel="lobby")
    assert membership(alice, "leave") == who(bob, "lobby")
    bob.ok("subscribe", channel="lobby")
    assert membership(alice, "join") == who(bob, "lobby")
    bob.close()
    assert membership(alice, "leave") == who(bob, "lobby")
    assert [frame["channel"] for frame in seen(carol, "join")] == ["elsewhere"]  # her own
    assert seen(carol, "leave") == []
    for client in (alice, carol):
        client.close()


def test_unsubscribe_from_all_sends_a_leave_per_channel(make_server):
    """``unsubscribe`` without a channel leaves each channel with its own frame."""
    server = make_server(join_leave=True)
    alice, bob = Client(server.ws_url, "alice"), Client(server.ws_url, "bob")
    for channel in ("a", "b"):
        alice.ok("subscribe", channel=channel)
        bob.ok("subscribe", channel=channel)
    bob.ok("unsubscribe")
    left = [membership(alice, "leave") for _ in range(2)]
    assert sorted(left, key=lambda frame: frame["channel"]) == [who(bob, "a"), who(bob, "b")]
    alice.close()
    bob.close()


def test_join_leave_is_off_by_default():
    """Without the setting, subscribers see no join or leave frames."""
    with ServerThread() as server:
        alice, bob = Client(server.ws_url, "alice"), Client(server.ws_url, "bob")
        alice.ok("subscribe", channel="lobby")
        bob.ok("subscribe", channel="lobby")
        bob.ok("unsubscribe", channel="lobby")
        assert seen(alice, "join") == seen(alice, "leave") == []
        alice.close()
        bob.close()


class MessageHooks:
    """Counts what message hooks see; a join/leave must reach none of them."""

    def __init__(self) -> None:
        self.filtered: list[str] = []
        self.published: list[str] = []

    @hookimpl
    def filter_message(self, message):
        self.filtered.append(message.text)

    @hookimpl
    def message_published(self, message):
        self.published.append(message.text)

    @hookimpl
    def history(self, channel):
        return [] if channel == "lobby" else None


def test_join_leave_frames_run_no_message_hooks_and_are_not_history():
    """A join/leave travels like a message but runs neither filter_message nor
    message_published, so a history plugin never stores it."""
    hooks = MessageHooks()
    with ServerThread(Settings(join_leave=True), plugins=[hooks]) as server:
        alice, bob = Client(server.ws_url, "alice"), Client(server.ws_url, "bob")
        alice.ok("subscribe", channel="lobby")
        bob.ok("subscribe", channel="lobby")
        bob.ok("unsubscribe", channel="lobby")
        membership(alice, "leave")
        alice.ok("publish", channel="lobby", text="hello")
        assert alice.next("message")["text"] == "hello"
        assert hooks.filtered == hooks.published == ["hello"]
        alice.close()
        bob.close()


# -- across processes (Redis) ------------------------------------------------------------

#: A short node TTL: a killed process counts as dead after 3/5 of it.
NODE_TTL = 2.0


def _process(redis_url: str) -> ServerProcess:
    return ServerProcess({"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_JOIN_LEAVE": "true",
                          "QUART_CHAT_NODE_TTL": str(NODE_TTL),
                          "QUART_CHAT_REDIS_PROBE_INTERVAL": "0.2"})


@pytest.mark.redis
def test_join_leave_cross_processes_and_a_killed_process_leaves_its_channels(redis_url):
    """Two processes on one Redis: joins and leaves cross; when a process is SIGKILLed,
    the node heartbeat of the survivor reaps its sessions and sends their leaves."""
    with _process(redis_url) as first, _process(redis_url) as doomed:
        alice = Client(first.ws_url, "alice")
        bob, carol = Client(doomed.ws_url, "bob"), Client(doomed.ws_url, "carol")
        alice.ok("subscribe", channel="lobby")
        membership(alice, "join")
        bob.ok("subscribe", channel="lobby")
        assert membership(alice, "join") == who(bob, "lobby")
        assert membership(bob, "join") == who(bob, "lobby")
        alice.ok("subscribe", channel="side")
        membership(alice, "join")
        carol.ok("subscribe", channel="lobby")
        carol.ok("subscribe", channel="side")
        for channel in ("lobby", "side"):
            assert membership(alice, "join") == who(carol, channel)
        carol.ok("unsubscribe", channel="side")
        assert membership(alice, "leave") == who(carol, "side")
        assert membership(bob, "join") == who(carol, "lobby")  # bob is on the doomed one

        doomed.stop(signal.SIGKILL)
        killed = time.monotonic()
        left = [membership(alice, "leave") for _ in range(2)]
        took = time.monotonic() - killed
        assert sorted(left, key=lambda f: f["client_id"]) == [who(bob, "lobby"),
                                                              who(carol, "lobby")]
        assert took < NODE_TTL + 2, took
        assert alice.ok("presence", channel="lobby")["clients"] == ["alice"]
        print(f"leave frames {took:.2f}s after SIGKILL (node_ttl {NODE_TTL}s)")
        for client in (alice, bob, carol):
            client.close()
