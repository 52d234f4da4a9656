"""Sentinel: the primary dies under traffic, a replica is promoted, sessions carry on.

One primary, one replica and three Sentinels are started by the test on free loopback
ports and stopped by PID afterwards.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from quart_chat.backends.sentinel import parse_sentinel_url
from quart_chat.errors import ConfigError
from quart_chat.testing import LocalSentinel

from .cluster_fixtures import Publisher, check_stream, has_gap, has_text, read_until, servers
from .wsclient import Client

pytestmark = pytest.mark.redis


def test_sentinel_url_names_sentinels_service_and_database():
    """``redis+sentinel://`` takes Sentinel seeds (default port 26379), the monitored
    name and an optional database; the credentials are the primary's."""
    target = parse_sentinel_url("redis+sentinel://:pw@s1:5000,s2/chat-main/2")
    assert target.sentinels == (("s1", 5000), ("s2", 26379))
    assert (target.service, target.db, target.password) == ("chat-main", 2, "pw")
    assert parse_sentinel_url("redis+sentinel://s1:1/main/").db == 0


@pytest.mark.parametrize("url", [
    "redis+sentinel://s1:1",
    "redis+sentinel://s1:1/",
    "redis+sentinel://s1:1/main/x",
    "redis+sentinel://s1:1/main/0/extra",
    "redis+sentinel:///main",
])
def test_bad_sentinel_urls_are_refused_clearly(url):
    """A Sentinel URL without a master name (or with junk) is a ConfigError."""
    with pytest.raises(ConfigError, match="QUART_CHAT_REDIS_URL"):
        parse_sentinel_url(url)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return bool(json.load(response)["connected"])
    except (OSError, urllib.error.URLError):
        return False


def test_primary_killed_during_traffic_service_restored_without_reconnecting():
    """SIGKILL the primary while messages flow between two server processes: the same
    WebSockets stay open, subscribers get a ``gap`` notice, and after it every message
    arrives in order from the promoted replica; presence and /healthz come back."""
    with LocalSentinel() as group, servers(group.url, 2) as (one, two):
        talker = Client(one.ws_url, "talker", timeout=60)
        listener = Client(two.ws_url, "listener", timeout=60)
        for client in (talker, listener):
            client.ok("subscribe", channel="lobby")
        sessions = (talker.welcome["session"], listener.welcome["session"])
        old = group.primary_port()
        publisher = Publisher(talker, "lobby")
        publisher.start()
        try:
            publisher.wait_acked(200)
            group.kill_primary()
            frames = read_until(listener, has_gap("lobby"))
            publisher.wait_acked(200)
        finally:
            publisher.stop()
        promoted = group.wait_for_failover(old)
        talker.ok("publish", channel="lobby", text="end")
        frames = read_until(listener, has_text("lobby", "end"), frames)

        before, after = check_stream(frames, "lobby")
        assert before and after, "traffic on both sides of the failover"
        assert after[-1] == publisher.acked[-1]
        assert promoted.port != old
        assert (talker.welcome["session"], listener.welcome["session"]) == sessions
        talker.ok("subscribe", channel="after")  # the store works on the new primary
        assert talker.ok("presence", channel="after")["clients"] == ["talker"]
        deadline = time.monotonic() + 30
        while not all(healthy(p.url) for p in (one, two)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(healthy(p.url) for p in (one, two))
        talker.close()
        listener.close()


async def test_redis_client_follows_the_sentinel_primary(sentinel_group):
    """``redis_client`` on a Sentinel URL writes to the current primary."""
    from quart_chat import redis_client

    client = redis_client(sentinel_group.url)
    try:
        await client.set("quart-chat:probe-key", "here")
        port = sentinel_group.primary_port()
        primary = next(s for s in sentinel_group.servers if s.port == port)
        assert primary.cli("GET", "quart-chat:probe-key").strip() == "here"
    finally:
        await client.aclose()


@pytest.fixture
def sentinel_group() -> Iterator[LocalSentinel]:
    """A fresh primary, replica and three Sentinels."""
    with LocalSentinel() as group:
        yield group
