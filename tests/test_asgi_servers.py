"""The protocol under every ASGI server the docs name (issue 14.0): a server the docs
recommend is a server these tests prove. Each server runs as the docs start it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from .asgi_servers import SERVERS, Served
from .helpers import wait_until
from .wsclient import Client, close_code


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    env = {"QUART_CHAT_MAX_BAD_FRAMES": "5", "QUART_CHAT_PUBLISH_RATE": "1000",
           "QUART_CHAT_PUBLISH_BURST": "1000"}
    with Served(request.param, env) as server:
        yield server


@pytest.fixture
def clients(served: Served) -> Iterator[object]:
    opened: list[Client] = []

    def connect(client_id: str, **params: str) -> Client:
        opened.append(Client(served.ws_url, client_id, **params))
        return opened[-1]

    yield connect
    for client in opened:
        client.close()


def test_a_session_stays_open_and_served_past_its_first_seconds(clients):
    """Under uvicorn every session used to be closed with 1000 one second after it
    opened (the liveness watcher found no hypercorn stamp and ended the session)."""
    alice = clients("alice")
    assert alice.welcome["client_id"] == "alice"
    time.sleep(2.5)
    assert alice.ok("ping")["ok"] is True


def test_subscribe_publish_receive(clients):
    alice, bob = clients("alice"), clients("bob")
    alice.ok("subscribe", channel="lobby")
    bob.ok("subscribe", channel="lobby")
    mid = bob.ok("publish", channel="lobby", text="hello")["mid"]
    for client in (alice, bob):
        message = client.next()
        assert (message["channel"], message["sender"], message["text"], message["mid"]) == (
            "lobby", "bob", "hello", mid)
    assert alice.ok("channels")["channels"] == ["lobby"]
    assert alice.ok("unsubscribe")["channels"] == []


def test_bad_frames_get_errors_and_the_connection_carries_on(clients):
    alice = clients("alice")
    alice.send("{not json")
    assert alice.next("error")["code"] == "bad_frame"
    assert alice.error("dance")["code"] == "unknown_type"
    assert alice.error("publish", channel="nowhere", text="x")["code"] == "not_subscribed"
    assert alice.ok("ping")["ok"] is True


def test_batch_clients_receive_every_message(clients):
    reader, writer = clients("reader", batch="1"), clients("writer")
    assert reader.welcome["batch"] is True
    reader.ok("subscribe", channel="room")
    writer.ok("subscribe", channel="room")
    for n in range(50):
        writer.send({"type": "publish", "channel": "room", "text": str(n)})
    assert [m["text"] for m in reader.messages(50)] == [str(n) for n in range(50)]


def test_too_many_bad_frames_close_with_1008_and_the_log_says_so(served, clients):
    spammer = clients("spammer")
    for _ in range(6):  # max_bad_frames=5: the sixth closes; each answer read (no reset)
        spammer.send("{not json")
        assert spammer.next("error")["code"] == "bad_frame"
    assert close_code(spammer.ws) == 1008
    wait_until(lambda: re.search(r"client_id=spammer .*close_code=1008", served.log()), 10,
               "the 1008 in the log")


def test_a_client_close_is_logged_with_its_own_code(served, clients):
    leaver = clients("leaver")
    leaver.ws.close(status=1001)
    wait_until(lambda: re.search(r"disconnect client_id=leaver .*close_code=1001",
                                 served.log()), 10, "the client's 1001 in the log")


def test_ping_answers_with_a_timestamp(clients):
    alice = clients("alice")
    alice.send(json.dumps({"type": "ping", "id": "p"}))
    reply = alice.reply("p")
    assert reply["ok"] is True and abs(reply["ts"] - time.time()) < 60
