"""Wire protocol v1 over real sockets, once with the embedded broker and once with Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import websocket

from quart_chat import Rejected, hookimpl
from quart_chat.hub import Tick
from quart_chat.testing import ServerThread

from .wsclient import Client


def test_welcome_names_the_client_session_and_server(connect):
    alice = connect("alice")
    welcome = alice.welcome
    assert welcome["client_id"] == "alice"
    assert welcome["server"].startswith("quart-chat ")
    assert len(welcome["session"]) >= 8
    assert welcome["protocol"] == 1


def test_subscribe_publish_receive_across_channels(connect):
    """Each client receives exactly the channels it subscribed to, the sender included."""
    alice, bob = connect("alice"), connect("bob")
    alice.ok("subscribe", channel="a")
    alice.ok("subscribe", channel="b")
    bob.ok("subscribe", channel="b")
    alice.ok("publish", channel="a", text="only alice")
    alice.ok("publish", channel="b", text="both")
    assert [m["text"] for m in alice.messages(2)] == ["only alice", "both"]
    message = bob.next()
    assert (message["channel"], message["text"], message["sender"]) == ("b", "both", "alice")
    assert isinstance(message["ts"], float) and message["mid"]


def test_request_ids_are_echoed_ints_and_strings(connect):
    alice = connect("alice")
    alice.send({"type": "ping", "id": "abc"})
    assert alice.reply("abc")["ok"] is True
    alice.send({"type": "ping", "id": 41})
    assert alice.reply(41)["ok"] is True


def test_channels_lists_my_subscriptions(connect):
    alice = connect("alice")
    alice.ok("subscribe", channel="z")
    alice.ok("subscribe", channel="a")
    assert alice.ok("channels")["channels"] == ["a", "z"]


def test_unsubscribe_one_then_all(connect):
    """unsubscribe answers with the channels left; no channel means all."""
    alice, bob = connect("alice"), connect("bob")
    for channel in ("a", "b", "c"):
        alice.ok("subscribe", channel=channel)
    bob.ok("subscribe", channel="a")
    assert alice.ok("unsubscribe", channel="b")["channels"] == ["a", "c"]
    assert alice.ok("unsubscribe")["channels"] == []
    assert alice.ok("channels")["channels"] == []
    bob.ok("publish", channel="a", text="after")
    assert bob.next()["text"] == "after"
    alice.ok("ping")
    assert not [f for f in alice.inbox if f["type"] == "message"]


def test_presence_lists_clients_once_each(connect):
    """A client with two sessions in a channel appears once; leaving removes it."""
    alice1, alice2, bob = connect("alice"), connect("alice"), connect("bob")
    for client in (alice1, alice2, bob):
        client.ok("subscribe", channel="room")
    assert bob.ok("presence", channel="room")["clients"] == ["alice", "bob"]
    alice1.ok("unsubscribe", channel="room")
    assert bob.ok("presence", channel="room")["clients"] == ["alice", "bob"]
    alice2.close()
    deadline = time.monotonic() + 5
    while bob.ok("presence", channel="room")["clients"] != ["bob"]:
        assert time.monotonic() < deadline, "alice still present after disconnecting"
        time.sleep(0.02)
    assert bob.ok("presence", channel="empty")["clients"] == []


def test_history_is_unavailable_without_a_persistence_plugin(connect):
    alice = connect("alice")
    assert alice.error("history", channel="room")["code"] == "history_unavailable"
    assert alice.error("history", channel="room", limit=0)["code"] == "bad_frame"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("nonsense", "bad_frame"),
        ('["subscribe"]', "bad_frame"),
        ('{"type": "subscribe", "id": 5}', "bad_frame"),
        ('{"type": "subscribe", "channel": 7, "id": 5}', "bad_frame"),
        ('{"type": "fly", "id": 5}', "unknown_type"),
        ('{"type": "subscribe", "channel": "no spaces", "id": 5}', "invalid_channel"),
        ('{"type": "publish", "channel": "never", "text": "x", "id": 5}', "not_subscribed"),
        ('{"type": "unsubscribe", "channel": "never", "id": 5}', "not_subscribed"),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_carries_on(connect, frame, code):
    alice, bob = connect("alice"), connect("bob")
    bob.ok("subscribe", channel="room")
    alice.send(frame)
    error = alice.next("error")
    assert error["code"] == code
    assert error["message"]
    if '"id": 5' in frame:
        assert error["id"] == 5
    alice.ok("subscribe", channel="room")
    alice.ok("publish", channel="room", text="still here")
    assert bob.next()["text"] == "still here"


def test_binary_frames_get_bad_frame(connect):
    alice = connect("alice")
    alice.ws.send_binary(b"\x01\x02")
    assert alice.next("error")["code"] == "bad_frame"
    alice.ws.send_binary(b"")
    assert alice.next("error")["code"] == "bad_frame"
    alice.ok("ping")


def test_already_subscribed(connect):
    alice = connect("alice")
    alice.ok("subscribe", channel="room")
    assert alice.error("subscribe", channel="room")["code"] == "already_subscribed"


@pytest.mark.parametrize(
    "query", ["", "client_id=", "client_id=has%20space", "client_id=" + "x" * 65]
)
def test_handshake_without_a_valid_client_id_is_refused_with_a_reason(server, query):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(f"{server.ws_url}?{query}", timeout=5)
    assert info.value.status_code == 400
    assert b"client_id" in info.value.resp_body


def test_healthz_reports_the_broker(server):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/healthz") as response:
        health = json.load(response)
    assert response.status == 200
    assert health["status"] == "ok" and health["connected"] is True
    assert health["broker"] == server.service.broker.name


def test_batch_clients_may_receive_several_documents_per_frame(server):
    """With ?batch=1 a burst arrives coalesced; every document is a whole frame."""
    reader = Client(server.ws_url, "reader", batch="1")
    writer = Client(server.ws_url, "writer")
    try:
        reader.ok("subscribe", channel="room")
        writer.ok("subscribe", channel="room")
        for n in range(30):
            writer.send({"type": "publish", "channel": "room", "text": str(n), "id": n})
        for n in range(30):
            writer.reply(n)
        assert [m["text"] for m in reader.messages(30)] == [str(n) for n in range(30)]
        assert reader.welcome["batch"] is True
    finally:
        reader.close()
        writer.close()


def test_a_loaded_coalescing_sender_gathers_until_the_next_tick(server):
    """Once a ``?batch=1`` write carried several messages, the next write waits for the
    process's tick: two messages 2 ms apart then leave in one frame (at light load the
    first would have been written alone at once)."""
    reader = Client(server.ws_url, "reader", batch="1")
    try:
        session = next(s for s in server.service.sessions if s.client_id == "reader")

        def note(n: int) -> str:
            return f'{{"type":"note","n":{n}}}'

        async def bursts() -> None:
            for n in range(3):  # queued in one turn: one write of three, now loaded
                session.deliver(note(n))
            await asyncio.sleep(0.05)
            session.deliver(note(3))
            asyncio.get_running_loop().call_later(0.002, session.deliver, note(4))

        server.call(bursts())
        frames = [str(reader.ws.recv()).split("\n") for _ in range(2)]
        assert frames == [[note(0), note(1), note(2)], [note(3), note(4)]]
    finally:
        reader.close()


def test_coalescing_senders_share_one_timer_per_tick():
    """Every sender under load waits for the same tick: one timer for the process."""
    async def scenario() -> None:
        tick = Tick(0.01)
        first = tick.next()
        assert tick.next() is first
        await asyncio.gather(asyncio.shield(first), asyncio.shield(tick.next()))
        assert tick.next() is not first

    asyncio.run(scenario())


class Moderator:
    """An inline plugin: forbids channel 'secret', rejects 'spam', rewrites 'darn'."""

    @hookimpl
    def authorize(self, action, channel):
        return channel != "secret"

    @hookimpl
    def filter_message(self, message):
        if "spam" in message.text:
            raise Rejected("no spam please")
        return message.replace(text=message.text.replace("darn", "d**n"))


class Broken:
    @hookimpl
    async def filter_message(self, message):
        if message.text == "boom":
            raise RuntimeError("plugin bug")


@pytest.fixture
def moderated(settings):
    with ServerThread(settings, plugins=[Moderator(), Broken()]) as running:
        yield running


def test_plugins_can_forbid_reject_rewrite_and_fail_safely(moderated):
    """forbidden, rejected and internal errors reach only the client concerned."""
    alice, bob = Client(moderated.ws_url, "alice"), Client(moderated.ws_url, "bob")
    try:
        assert alice.error("subscribe", channel="secret")["code"] == "forbidden"
        alice.ok("subscribe", channel="room")
        bob.ok("subscribe", channel="room")
        reply = alice.request("publish", channel="room", text="buy spam")
        assert (reply["code"], reply["message"]) == ("rejected", "no spam please")
        assert alice.error("publish", channel="room", text="boom")["code"] == "internal"
        alice.ok("publish", channel="room", text="darn")
        assert bob.next()["text"] == "d**n"
    finally:
        alice.close()
        bob.close()
