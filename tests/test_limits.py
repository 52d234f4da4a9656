"""Every limit is a setting with a safe default, and each is hit here."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import websocket

from quart_chat import hookimpl
from quart_chat.protocol import CLOSE_POLICY, CLOSE_SLOW_CONSUMER, CLOSE_TOO_BIG

from .wsclient import close_code


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.02)


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_text_length_limit(make_server, opened):
    alice = opened(make_server(max_text_length=10), "alice")
    alice.ok("subscribe", channel="room")
    alice.ok("publish", channel="room", text="x" * 10)
    assert alice.error("publish", channel="room", text="x" * 11)["code"] == "too_large"


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_frame_size_limit_counts_bytes_then_the_transport_closes_with_1009(make_server, opened):
    """A frame over the byte limit gets too_large; one beyond 4x the limit closes 1009."""
    server = make_server(max_frame_bytes=1024)
    alice = opened(server, "alice")
    alice.ok("subscribe", channel="room")
    text = "€" * 400  # 400 characters, 1200 bytes
    assert alice.error("publish", channel="room", text=text)["code"] == "too_large"
    alice.ok("ping")
    alice.send('{"type":"ping","pad":"' + "x" * 5000 + '"}')
    assert close_code(alice.ws) == CLOSE_TOO_BIG


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_publish_rate_limit(make_server, opened):
    alice = opened(make_server(publish_rate=0.5, publish_burst=3), "alice")
    alice.ok("subscribe", channel="room")
    for _ in range(3):
        alice.ok("publish", channel="room", text="x")
    assert alice.error("publish", channel="room", text="x")["code"] == "rate_limited"


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_channels_per_session_limit(make_server, opened):
    alice = opened(make_server(max_channels_per_session=3), "alice")
    for channel in ("a", "b", "c"):
        alice.ok("subscribe", channel=channel)
    reply = alice.request("subscribe", channel="d")
    assert reply["code"] == "forbidden" and "at most 3" in reply["message"]
    alice.ok("unsubscribe", channel="a")
    alice.ok("subscribe", channel="d")


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_a_client_that_keeps_sending_bad_frames_is_closed_with_1008(make_server, opened):
    alice = opened(make_server(max_bad_frames=5), "alice")
    for _ in range(6):  # the 6th bad frame within 10 s exceeds the tolerance of 5
        alice.send("garbage")
    assert close_code(alice.ws) == CLOSE_POLICY


def test_a_slow_consumer_is_disconnected_and_the_others_keep_receiving(make_server, opened):
    """A client that stops reading fills its bounded queue and is closed with 4000."""
    server = make_server(outbound_queue=20, publish_rate=1e6, publish_burst=1e6)
    slow = websocket.create_connection(
        f"{server.ws_url}?client_id=slow", timeout=10,
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
    )
    slow.recv()  # welcome
    slow.send('{"type":"subscribe","channel":"room","id":1}')
    fast = opened(server, "fast")
    publisher = opened(server, "publisher")
    fast.ok("subscribe", channel="room")
    publisher.ok("subscribe", channel="room")
    text = "x" * 3000
    sent = 0
    for _ in range(400):  # at most 4,000 messages of 3 KB: far beyond socket buffers
        for n in range(10):
            publisher.send({"type": "publish", "channel": "room", "text": text, "id": n})
        for n in range(10):
            publisher.reply(n)
        publisher.inbox.clear()
        sent += 10
        assert [m["text"] for m in fast.messages(10)] == [text] * 10
        if len(server.service.sessions) == 2:
            break
    wait_until(lambda: len(server.service.sessions) == 2, what="slow client dropped")
    assert sent < 4000, "the slow client was never disconnected"
    assert fast.ok("presence", channel="room")["clients"] == ["fast", "publisher"]
    publisher.ok("publish", channel="room", text="after")
    assert fast.next()["text"] == "after"
    try:
        assert close_code(slow) == CLOSE_SLOW_CONSUMER
    finally:
        slow.shutdown()


class SlowFilter:
    """Holds each publish for a while, so frames pile up behind it."""

    @hookimpl
    async def filter_message(self, message):
        await asyncio.sleep(1.0)


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_a_client_sending_ahead_of_its_busy_session_is_paced_not_closed(make_server, opened):
    """Frames sent while the session is busy wait unread (TCP slows the client down); the
    session then answers every one, in order, and the others are served meanwhile.

    (Before issue 14, Quart read them all into an unbounded queue and the session closed
    the client with 1008 beyond ``max_inbound_backlog``, still accepted, now unused.)
    """
    server = make_server(plugins=(SlowFilter(),), max_inbound_backlog=50)
    flooder, bystander = opened(server, "flooder"), opened(server, "bystander")
    flooder.ok("subscribe", channel="room")
    flooder.send({"type": "publish", "channel": "room", "text": "slow", "id": "p"})
    for n in range(200):
        flooder.send({"type": "ping", "id": n})
    bystander.ok("ping")
    assert flooder.reply("p")["ok"] is True
    assert [flooder.reply(n)["ok"] for n in range(200)] == [True] * 200
