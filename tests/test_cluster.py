"""Redis Cluster: sharded pub/sub over a real 3-primary cluster, server processes on top.

Every cluster here is started by the test (``redis-server --cluster-enabled yes`` on free
loopback ports, ``redis-cli --cluster create``) and stopped by PID afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from quart_chat import channel_key
from quart_chat.backends import open_backend
from quart_chat.backends.cluster import channel_wire, parse_cluster_url
from quart_chat.config import Settings
from quart_chat.errors import ConfigError
from quart_chat.testing import LocalCluster, RedisServer, ServerThread

from .cluster_fixtures import (
    Publisher,
    check_stream,
    has_gap,
    has_text,
    pair,
    read_until,
    servers,
    stream_through,
)
from .helpers import health
from .wsclient import Client

pytestmark = pytest.mark.redis

PREFIX = "quart-chat"
CHANNELS = [f"room-{n}" for n in range(100)]


def slot_of(channel: str) -> int:
    return key_slot(channel_wire(PREFIX, channel))


def shard_counts(node: RedisServer, channels: list[str]) -> dict[str, int]:
    """``PUBSUB SHARDNUMSUB`` on one node: channel -> subscriptions there."""
    wires = [channel_wire(PREFIX, c).decode() for c in channels]
    out = node.cli("PUBSUB", "SHARDNUMSUB", *wires).split()
    return {c: int(n) for c, n in zip(channels, out[1::2], strict=True)}


def shard_channels(node: RedisServer) -> set[str]:
    return set(node.cli("PUBSUB", "SHARDCHANNELS").split())


def pubsub_connections(node: RedisServer) -> int:
    """Connections with at least one shard channel subscribed (``ssub>0``)."""
    return sum(1 for line in node.cli("CLIENT", "LIST").splitlines()
               if "ssub=" in line and "ssub=0 " not in line)


def publish_retrying(client: Client, channel: str, text: str, attempts: int = 100) -> None:
    """Publish, retrying ``unavailable`` (the cluster may still be settling)."""
    for _ in range(attempts):
        reply = client.request("publish", channel=channel, text=text)
        if reply["type"] == "result":
            return
        assert reply["code"] == "unavailable", reply
        time.sleep(0.1)
    raise AssertionError(f"publish to {channel} still unavailable")


def same_shard_channel(cluster: LocalCluster, owner: RedisServer, avoid_slot: int) -> str:
    """A channel name whose slot ``owner`` owns, other than ``avoid_slot``."""
    for n in range(10_000):
        name = f"calm-{n}"
        slot = slot_of(name)
        if slot != avoid_slot and cluster.owner(slot) is owner:
            return name
    raise LookupError("no such channel")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A 3-primary cluster shared by the tests that do not change its layout."""
    with LocalCluster(primaries=3) as running:
        yield running


# -- URLs ----------------------------------------------------------------------------


def test_cluster_url_names_any_seed_nodes_and_credentials():
    """``redis+cluster://`` takes host:port seeds (default port 6379) and user:password."""
    target = parse_cluster_url("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert target.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (target.username, target.password) == ("u", "p@ss")
    assert parse_cluster_url("redis+cluster://:secret@h:1/").password == "secret"


@pytest.mark.parametrize("url", [
    "redis+cluster://",
    "redis+cluster://h:notaport",
    "redis+cluster://h:1/3",
    "redis+cluster://h:1?x=1",
    "redis+cluster://h:70000",
])
def test_bad_cluster_urls_are_refused_clearly(url):
    """A malformed cluster URL is a ConfigError naming the setting, never a crash later."""
    with pytest.raises(ConfigError, match="QUART_CHAT_REDIS_URL"):
        parse_cluster_url(url)


def test_unknown_scheme_lists_the_supported_forms():
    """The error for an unknown scheme names all the URL forms."""
    with pytest.raises(ConfigError, match=r"redis\+cluster://, redis\+sentinel://"):
        open_backend(Settings(redis_url="cluster://h:1"), "n")


def test_a_key_prefix_with_braces_is_refused_on_a_cluster():
    """The server owns the hash tags in its keys, so the prefix may not add one."""
    with pytest.raises(ConfigError, match="QUART_CHAT_KEY_PREFIX"):
        open_backend(Settings(redis_url="redis+cluster://h:1", key_prefix="a{b}"), "n")


def test_channel_keys_share_the_channels_slot():
    """Shard channel, presence and history keys of a channel hash to one slot."""
    wire = channel_wire(PREFIX, "lobby")
    keys = [channel_key(PREFIX, kind, "lobby", cluster=True) for kind in ("presence", "history")]
    assert {key_slot(wire), *(key_slot(k.encode()) for k in keys)} == {key_slot(b"lobby")}
    assert channel_key(PREFIX, "history", "lobby", cluster=False) == "quart-chat:history:lobby"


# -- one cluster, two server processes ---------------------------------------------------


def test_hundred_channels_over_three_shards_two_processes(cluster):
    """100 channels spread over all shards, clients on both processes: every message
    once and in order per publisher, and each shard holds exactly its own channels,
    with one pub/sub connection per process."""
    owners = {c: cluster.owner(slot_of(c)).port for c in CHANNELS}
    assert len(set(owners.values())) == 3, "the channels do not cover every shard"
    with servers(cluster.url, 2) as (one, two):
        everything = [Client(one.ws_url, "ann", timeout=30), Client(two.ws_url, "bob", timeout=30)]
        low, high = Client(one.ws_url, "cid", timeout=30), Client(two.ws_url, "dee", timeout=30)
        try:
            for client in everything:
                for channel in CHANNELS:
                    client.ok("subscribe", channel=channel)
            for channel in CHANNELS[:50]:
                low.ok("subscribe", channel=channel)
            for channel in CHANNELS[50:]:
                high.ok("subscribe", channel=channel)

            for node in cluster.nodes:
                mine = [c for c in CHANNELS if owners[c] == node.port]
                assert set(shard_counts(node, mine).values()) == {2}
                assert shard_channels(node) == {channel_wire(PREFIX, c).decode() for c in mine}
                assert pubsub_connections(node) == 2  # one per process, not per channel
            for proc in (one, two):
                assert health(proc.url)["shards"] == 3

            rounds = 3
            publishers = [_RoundsPublisher(c, CHANNELS, rounds) for c in everything]
            for publisher in publishers:
                publisher.start()
            for publisher in publishers:
                publisher.join(120)
                assert publisher.failure is None, publisher.failure

            expected = {
                "ann": (everything[0], CHANNELS), "bob": (everything[1], CHANNELS),
                "cid": (low, CHANNELS[:50]), "dee": (high, CHANNELS[50:]),
            }
            for client, channels in expected.values():
                want = 2 * rounds * len(channels)
                got = read_until(client, lambda f, n=want: sum(
                    1 for x in f if x["type"] == "message") >= n)
                client.ok("ping")  # anything still in flight would now be in the inbox
                got += [f for f in client.inbox if f["type"] == "message"]
                messages = [f for f in got if f["type"] == "message"]
                assert len(messages) == 2 * rounds * len(channels)
                assert not [f for f in got if f["type"] == "gap"]
                streams: dict[tuple[str, str], list[int]] = {}
                for m in messages:
                    streams.setdefault((m["channel"], m["sender"]), []).append(
                        int(m["text"].rsplit(":", 1)[1]))
                assert set(streams) == {(c, s) for c in channels for s in ("ann", "bob")}
                assert all(seq == list(range(rounds)) for seq in streams.values())
        finally:
            for client in (*everything, low, high):
                client.close()


class _RoundsPublisher(Publisher):
    """Publishes ``round`` numbers to every channel, round after round."""

    def __init__(self, client: Client, channels: list[str], rounds: int) -> None:
        super().__init__(client, channels[0])
        self.channels, self.rounds = channels, rounds

    def run(self) -> None:
        try:
            for n in range(self.rounds):
                for channel in self.channels:
                    self.client.ok("publish", channel=channel, text=f"{channel}:{n}")
        except BaseException as exc:
            self.failure = exc


def test_presence_and_client_records_live_on_the_right_shards(cluster):
    """Presence sits on the channel's shard, a client's records on the client's shard;
    a shard's pub/sub connection closes when its last channel is left; nothing stays."""
    lonely = CHANNELS[0]
    owner = cluster.owner(slot_of(lonely))
    some = [c for c in CHANNELS if cluster.owner(slot_of(c)) is not owner][:10]
    settings = Settings(redis_url=cluster.url, redis_probe_interval=0.2)
    with ServerThread(settings) as server:
        alice, bob = Client(server.ws_url, "alice"), Client(server.ws_url, "bob")
        for client in (alice, bob):
            for channel in some:
                client.ok("subscribe", channel=channel)
        assert alice.ok("presence", channel=some[3])["clients"] == ["alice", "bob"]
        assert alice.ok("channels")["channels"] == sorted(some)
        presence = channel_key(PREFIX, "presence", some[3], cluster=True)
        assert cluster.owner(key_slot(presence.encode())).cli("EXISTS", presence).strip() == "1"
        client_key = f"{PREFIX}:client:{{alice}}"
        assert cluster.owner(key_slot(b"alice")).cli("SCARD", client_key).strip() == "1"

        assert pubsub_connections(owner) == 0
        alice.ok("subscribe", channel=lonely)
        assert pubsub_connections(owner) == 1
        assert shard_counts(owner, [lonely]) == {lonely: 1}
        alice.ok("unsubscribe", channel=lonely)
        eventually(lambda: pubsub_connections(owner) == 0)
        assert pubsub_connections(owner) == 0
        assert shard_counts(owner, [lonely]) == {lonely: 0}
        bob.close()
        alice.ok("unsubscribe")
        alice.close()
        eventually(lambda: not server.service.sessions)
    for node in cluster.nodes:
        assert node.cli("DBSIZE").strip() == "0", node.cli("KEYS", "*")
        assert shard_channels(node) == set()


def eventually(check: Any, limit: int = 600) -> None:
    """Poll ``check()`` from the test thread (bounded) until it is true."""
    for _ in range(limit):
        if check():
            return
        time.sleep(0.05)


# -- the cluster changes under traffic --------------------------------------------------


def test_slot_migration_of_a_busy_channel_during_traffic():
    """Moving a busy channel's slot to another shard mid-stream: the subscription follows
    it, subscribers get a ``gap`` notice, and after it every message arrives in order;
    a channel on the same shard but another slot is not disturbed."""
    with LocalCluster(primaries=3) as cluster, servers(cluster.url, 2) as (one, two):
        busy = "busy"
        slot = slot_of(busy)
        source = cluster.owner(slot)
        target = next(n for n in cluster.nodes if n is not source)
        calm = same_shard_channel(cluster, source, slot)
        talker, listener = pair(one, two, [busy, calm], timeout=30)
        publisher, frames = stream_through(talker, listener, busy,
                                           lambda: cluster.migrate_slot(slot, target))
        talker.ok("publish", channel=busy, text="end")
        talker.ok("publish", channel=calm, text="calm end")
        frames = read_until(listener, has_text(calm, "calm end"),
                            read_until(listener, has_text(busy, "end"), frames))

        before, after = check_stream(frames, busy)
        assert before and after, "traffic on both sides of the move"
        assert after[-1] == publisher.acked[-1]
        read_until(talker, has_gap(busy))  # the publisher's process was told as well
        assert not [f for f in frames if f["type"] == "gap" and f["channel"] == calm]
        assert shard_counts(target, [busy]) == {busy: 2}
        assert shard_counts(source, [busy]) == {busy: 0}
        assert shard_counts(source, [calm]) == {calm: 2}
        assert listener.ok("presence", channel=busy)["clients"] == ["listener", "talker"]
        assert health(two.url)["slot_moves"] >= 1
        talker.close()
        listener.close()


def test_shard_primary_killed_and_replaced_by_its_replica():
    """SIGKILL a shard's primary under traffic: once its replica is promoted the
    subscriptions are restored there, subscribers get a ``gap`` notice, and every
    message published after it arrives in order; channels on other shards get no gap."""
    with LocalCluster(primaries=3, replicas=1) as cluster, \
            servers(cluster.url, 2) as (one, two):
        busy = "busy"
        slot = slot_of(busy)
        victim = cluster.owner(slot)
        (heir,) = cluster.replicas_of(victim)
        elsewhere = next(c for c in CHANNELS if cluster.owner(slot_of(c)) is not victim)
        talker, listener = pair(one, two, [busy, elsewhere], timeout=60)
        publisher, frames = stream_through(talker, listener, busy, lambda: cluster.kill(victim))
        cluster.wait_healthy()
        assert cluster.owner(slot) is heir
        publish_retrying(talker, busy, "end")
        publish_retrying(talker, elsewhere, "elsewhere end")
        frames = read_until(listener, has_text(elsewhere, "elsewhere end"),
                            read_until(listener, has_text(busy, "end"), frames))

        before, after = check_stream(frames, busy)
        assert before and after, "traffic on both sides of the failover"
        assert after[-1] == publisher.acked[-1]
        assert not [f for f in frames if f["type"] == "gap" and f["channel"] == elsewhere]
        read_until(talker, has_gap(busy))  # the publisher's process was told as well
        assert shard_counts(heir, [busy]) == {busy: 2}
        assert listener.ok("presence", channel=elsewhere)["clients"] == ["listener", "talker"]
        for proc in (one, two):
            for _ in range(300):
                if health(proc.url).get("connected"):
                    break
                time.sleep(0.1)
            assert health(proc.url)["connected"], health(proc.url)
        talker.close()
        listener.close()


def test_a_slot_moved_while_unused_is_followed_through_moved(cluster):
    """A slot that moved while this process had no channel in it (so no shard told it):
    SSUBSCRIBE meets MOVED, the map is corrected and the channel works on its new owner."""
    settings = Settings(redis_url=cluster.url, redis_probe_interval=0.2)
    with ServerThread(settings) as server:
        alice = Client(server.ws_url, "alice")
        alice.ok("subscribe", channel="warm-up")
        channel = "moved-while-away"
        slot = slot_of(channel)
        source = cluster.owner(slot)
        target = next(n for n in cluster.nodes if n is not source)
        cluster.migrate_slot(slot, target)
        cluster.wait_healthy()
        alice.ok("subscribe", channel=channel)
        alice.ok("publish", channel=channel, text="here")
        assert alice.next()["text"] == "here"
        assert shard_counts(target, [channel]) == {channel: 1}
        assert server.call(server.service.broker.health())["slot_moves"] >= 1
        cluster.migrate_slot(slot, source)  # leave the shared cluster as it was
        cluster.wait_healthy()
        alice.close()


def test_a_stalled_shard_is_detected_and_its_channels_come_back_with_a_gap():
    """SIGSTOP a shard primary: its PINGs go unanswered, the link is rebuilt, and after
    SIGCONT its channels are subscribed again and subscribers told about the gap."""
    with LocalCluster(primaries=3) as cluster:
        settings = Settings(redis_url=cluster.url, redis_probe_interval=0.2)
        with ServerThread(settings) as server:
            alice = Client(server.ws_url, "alice", timeout=60)
            alice.ok("subscribe", channel="frozen")
            shard = cluster.owner(slot_of("frozen"))
            shard.pause()
            try:
                link = server.service.broker._links[("127.0.0.1", shard.port)]
                eventually(lambda: link.down)
                assert not server.call(server.service.broker.health())["pubsub"]
            finally:
                shard.resume()
            gap = alice.next("gap")
            assert gap["channel"] == "frozen"
            cluster.wait_healthy()
            publish_retrying(alice, "frozen", "thawed")
            assert alice.next()["text"] == "thawed"
            assert shard_counts(shard, ["frozen"]) == {"frozen": 1}
            alice.close()


async def test_a_channels_history_stream_lands_on_the_channels_shard(cluster):
    """``redis_client`` + ``channel_key``: a plugin's per-channel stream (Redis Streams
    history) is written through the cluster client and lives on the channel's shard."""
    from quart_chat import redis_client

    client = redis_client(cluster.url)
    key = channel_key(PREFIX, "history", "room-5", cluster=True)
    try:
        await client.xadd(key, {"text": "kept"}, maxlen=100)
        assert [f[b"text"] for _, f in await client.xrevrange(key, count=1)] == [b"kept"]
        assert cluster.owner(slot_of("room-5")).cli("XLEN", key).strip() == "1"
    finally:
        await client.delete(key)
        await client.aclose()


def test_subscription_churn_during_slot_moves_leaves_exactly_the_wanted_channels():
    """Subscribe/unsubscribe churn while slots move back and forth under it: afterwards
    every shard holds exactly the channels still wanted, each once, and each delivers."""
    import random
    import threading

    rng = random.Random(7)
    with LocalCluster(primaries=3) as cluster:
        settings = Settings(redis_url=cluster.url, redis_probe_interval=0.2)
        with ServerThread(settings) as server:
            steady = Client(server.ws_url, "steady", timeout=30)
            churner = Client(server.ws_url, "churner", timeout=30)
            pool = [f"churn-{n}" for n in range(60)]
            for channel in pool[:30]:
                steady.ok("subscribe", channel=channel)
            moving = sorted({slot_of(c) for c in pool[:6]})
            homes = {slot: cluster.owner(slot) for slot in moving}
            stop = threading.Event()
            errors: list[BaseException] = []

            def mover() -> None:
                try:
                    for n in range(6):
                        if stop.is_set():
                            return
                        for slot in moving:
                            current = cluster.owner(slot)
                            others = [x for x in cluster.nodes if x is not current]
                            cluster.migrate_slot(slot, others[n % len(others)])
                        cluster.wait_healthy()
                    for slot, home in homes.items():
                        if cluster.owner(slot) is not home:
                            cluster.migrate_slot(slot, home)
                    cluster.wait_healthy()
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=mover, daemon=True)
            thread.start()
            mine: set[str] = set()
            for _ in range(400):
                channel = rng.choice(pool)
                if channel in mine:
                    churner.ok("unsubscribe", channel=channel)
                    mine.discard(channel)
                else:
                    reply = churner.request("subscribe", channel=channel)
                    if reply["type"] == "result":
                        mine.add(channel)
                    else:
                        assert reply["code"] == "unavailable", reply
            thread.join(120)
            stop.set()
            assert not errors, errors
            assert not thread.is_alive()

            wanted = set(pool[:30]) | mine
            expected: dict[int, set[str]] = {}
            for channel in wanted:
                owner = cluster.owner(slot_of(channel))
                expected.setdefault(owner.port, set()).add(channel_wire(PREFIX, channel).decode())
            for _ in range(300):  # let re-subscriptions after the last moves settle
                if all(shard_channels(n) == expected.get(n.port, set()) for n in cluster.nodes):
                    break
                time.sleep(0.05)
            for node in cluster.nodes:
                assert shard_channels(node) == expected.get(node.port, set())
                counts = shard_counts(node, [c for c in wanted
                                             if cluster.owner(slot_of(c)) is node])
                assert set(counts.values()) <= {1}
            assert pubsub_connections(cluster.nodes[0]) <= 1
            assert server.call(server.service.broker.health())["slot_moves"] >= len(moving)

            for channel in sorted(mine):
                churner.ok("publish", channel=channel, text=f"last {channel}")
            got = read_until(churner, lambda f: sum(
                1 for x in f if x["type"] == "message" and x["text"].startswith("last ")
            ) >= len(mine))
            churner.ok("ping")
            got += list(churner.inbox)
            lasts = sorted(f["channel"] for f in got
                           if f["type"] == "message" and f["text"].startswith("last "))
            assert lasts == sorted(mine)
            steady.close()
            churner.close()


async def test_concurrent_publishes_through_a_failover_fail_only_with_unavailable():
    """200 publishes in flight at a time while a shard primary is killed and replaced:
    every one either succeeds or raises ``Unavailable`` (never a client-library error),
    and publishing to the failed shard works again once its replica took over."""
    import asyncio

    from quart_chat.errors import Unavailable

    with LocalCluster(primaries=3, replicas=1) as cluster:
        broker = open_backend(Settings(redis_url=cluster.url), "stress").broker
        await broker.start(lambda channel, payload: None, lambda channels: None)
        victim = cluster.owner(slot_of("room-0"))
        failures: dict[str, int] = {}
        done = {"ok": 0, "ok_after": 0}
        warmed = asyncio.Event()
        healed = asyncio.Event()

        async def publisher(n: int) -> None:
            for i in range(100_000):
                if healed.is_set() and done["ok_after"] >= 2000:
                    return
                try:
                    await broker.publish(CHANNELS[(n + i) % len(CHANNELS)], b"x")
                    done["ok"] += 1
                    if done["ok"] >= 2000:
                        warmed.set()
                    if healed.is_set():
                        done["ok_after"] += 1
                except Unavailable:
                    failures["Unavailable"] = failures.get("Unavailable", 0) + 1
                    await asyncio.sleep(0.01)
                except Exception as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

        async def chaos() -> None:
            await warmed.wait()
            await asyncio.to_thread(cluster.kill, victim)
            await asyncio.to_thread(cluster.wait_healthy)
            healed.set()

        try:
            await asyncio.wait_for(asyncio.gather(chaos(), *(publisher(n) for n in range(200))),
                                   120)
            assert set(failures) <= {"Unavailable"}, failures
            assert done["ok_after"] >= 2000
            await broker.publish("room-0", b"after")  # the failed shard's channel
        finally:
            await broker.close()
