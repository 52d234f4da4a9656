"""The Redis broker and store against a real redis-server started by the tests."""

from __future__ import annotations

import time

import pytest

from quart_chat.backends.redis import COMMAND_POOL_SIZE
from quart_chat.testing import RedisServer, ServerProcess, wait_for_health

from .wsclient import Client


@pytest.fixture
def broker() -> str:
    """Every test here runs on real Redis."""
    return "redis"


def wait_until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.05)


def connections(redis: RedisServer, node: str) -> dict[str, int]:
    """Connections this server process holds, by kind (from CLIENT LIST names)."""
    counts = {"pubsub": 0, "commands": 0}
    for line in redis.cli("CLIENT", "LIST").splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        name = fields.get("name", "")
        if name.startswith(f"quart-chat:{node}:"):
            counts[name.rsplit(":", 1)[1]] += 1
    return counts


def stored_keys(redis: RedisServer) -> list[str]:
    return sorted(redis.cli("--scan", "--pattern", "quart-chat:*").split())


def test_one_pubsub_connection_whatever_the_number_of_clients(server, redis_server):
    """200 clients in 50 channels: still one pub/sub connection and a bounded pool."""
    node = server.service.node_id
    clients = []
    try:
        for n in range(20):
            client = Client(server.ws_url, f"c{n}")
            client.ok("subscribe", channel=f"ch{n % 50}")
            clients.append(client)
        before = connections(redis_server, node)
        for n in range(20, 200):
            client = Client(server.ws_url, f"c{n}")
            client.ok("subscribe", channel=f"ch{n % 50}")
            clients.append(client)
        after = connections(redis_server, node)
        assert after["pubsub"] == before["pubsub"] == 1
        # The command pool grows with concurrency, never with clients: at most its size.
        assert 1 <= before["commands"] <= COMMAND_POOL_SIZE
        assert 1 <= after["commands"] <= COMMAND_POOL_SIZE
        channels = redis_server.cli("PUBSUB", "CHANNELS", "quart-chat:ch:*").split()
        assert len(channels) == 50
        clients[0].ok("publish", channel="ch0", text="to ch0")
        receivers = [c for n, c in enumerate(clients) if n % 50 == 0]
        assert all(c.next()["text"] == "to ch0" for c in receivers)
    finally:
        for client in clients:
            client.close()
    wait_until(lambda: not redis_server.cli("PUBSUB", "CHANNELS", "quart-chat:ch:*").split(),
               what="the last leaver unsubscribing every channel")
    wait_until(lambda: stored_keys(redis_server) == [], what="no stale records")


def test_records_follow_subscribe_unsubscribe_and_disconnect(server, redis_server):
    """Per-session channels and presence are in Redis, and nothing stale remains."""
    alice = Client(server.ws_url, "alice")
    session = alice.welcome["session"]
    alice.ok("subscribe", channel="a")
    alice.ok("subscribe", channel="b")
    assert sorted(redis_server.cli("SMEMBERS", f"quart-chat:session:{session}").split()) == [
        "a", "b"]
    assert redis_server.cli("HGET", "quart-chat:presence:a", session).strip() == "alice"
    assert redis_server.cli("SMEMBERS", "quart-chat:client:alice").split() == [session]
    alice.ok("unsubscribe", channel="a")
    assert redis_server.cli("EXISTS", "quart-chat:presence:a").strip() == "0"
    alice.close()
    wait_until(lambda: stored_keys(redis_server) == [], what="records removed on disconnect")


def test_redis_restart_mid_session_restores_every_subscription(server, redis_server):
    """Redis goes away: sessions stay, publishes get unavailable; it returns: all resumes."""
    alice, bob = Client(server.ws_url, "alice"), Client(server.ws_url, "bob")
    try:
        for channel in ("a", "b", "c"):
            alice.ok("subscribe", channel=channel)
            bob.ok("subscribe", channel=channel)
        redis_server.stop()
        assert alice.error("publish", channel="a", text="lost")["code"] == "unavailable"
        assert alice.error("subscribe", channel="d")["code"] == "unavailable"
        wait_until(lambda: server.service.broker._connected.is_set() is False,
                   what="the broker noticing the outage")
        redis_server.start()
        gaps = {bob.next("gap")["channel"] for _ in range(3)}
        assert gaps == {"a", "b", "c"}
        for channel in ("a", "b", "c"):
            alice.ok("publish", channel=channel, text=f"back on {channel}")
            assert bob.next()["text"] == f"back on {channel}"
        assert bob.ok("presence", channel="b")["clients"] == ["alice", "bob"]
        assert bob.ok("channels")["channels"] == ["a", "b", "c"]
    finally:
        alice.close()
        bob.close()


def test_healthz_is_503_while_redis_is_down(server, redis_server):
    import urllib.error
    import urllib.request

    redis_server.stop()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/healthz", timeout=10)
    assert info.value.code == 503
    info.value.close()
    redis_server.start()
    wait_for_health(server.url)


def test_two_processes_exchange_a_thousand_messages_in_order(redis_url):
    """A message published on one process reaches subscribers on the other; none lost."""
    env = {"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_PUBLISH_RATE": "100000",
           "QUART_CHAT_PUBLISH_BURST": "100000"}
    with ServerProcess(env) as first, ServerProcess(env) as second:
        alice, bob = Client(first.ws_url, "alice"), Client(second.ws_url, "bob")
        try:
            alice.ok("subscribe", channel="room")
            bob.ok("subscribe", channel="room")
            for sender, receiver in ((alice, bob), (bob, alice)):
                for start in range(0, 1000, 50):
                    for n in range(start, start + 50):
                        sender.send({"type": "publish", "channel": "room", "text": str(n), "id": n})
                    for n in range(start, start + 50):
                        sender.reply(n)
                    sender.inbox.clear()
                sender_id = sender.welcome["client_id"]
                texts = []
                while len(texts) < 1000:
                    message = receiver.next()
                    if message["sender"] == sender_id:
                        texts.append(message["text"])
                assert texts == [str(n) for n in range(1000)]
        finally:
            alice.close()
            bob.close()
