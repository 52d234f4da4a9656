"""Redis faults against a real redis-server: restarts, stalls, black holes, cut links,
output-buffer kills and long outages. No session is dropped, every gap is announced,
delivery comes back within seconds; each test prints its measured figures.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import pytest
import redis

from quart_chat.config import Settings
from quart_chat.testing import RedisServer, ServerThread, TcpProxy

from .helpers import Collector, wait_until

pytestmark = pytest.mark.redis

CHANNELS = ("alpha", "beta", "gamma")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server this test may kill, stop and restart (same port)."""
    with RedisServer() as server:
        yield server


@contextlib.contextmanager
def chatting(url: str) -> Iterator[tuple[ServerThread, Collector, Collector]]:
    """A server on ``url`` with a publisher and a subscriber in every channel; the test's
    own clean-up (resuming Redis, say) runs before they are closed."""
    settings = Settings(redis_url=url, redis_probe_interval=0.2, node_ttl=2.0,
                        publish_rate=1000, publish_burst=1000)
    with ServerThread(settings) as server:
        publisher, subscriber = Collector(server.ws_url, "pub"), Collector(server.ws_url, "sub")
        try:
            for channel in CHANNELS:
                publisher.ok("subscribe", channel=channel)
                subscriber.ok("subscribe", channel=channel)
            yield server, publisher, subscriber
        finally:
            publisher.close()
            subscriber.close()


def wait_for_gaps(subscriber: Collector) -> None:
    """Until the subscriber got a ``gap`` frame for every channel."""
    wait_until(lambda: {g["channel"] for g in subscriber.of("gap")} == set(CHANNELS), 5,
               "gap frames")


def delivered(subscriber: Collector, text: str) -> set[str]:
    return {m["channel"] for m in subscriber.of("message", text=text)}


def time_to_delivery(publisher: Collector, subscriber: Collector, timeout: float) -> float:
    """Publish a probe to every channel until all arrive; seconds it took."""
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < timeout:
        n += 1
        text = f"probe {n}"
        for channel in CHANNELS:
            publisher.send("publish", channel=channel, text=text)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            if delivered(subscriber, text) == set(CHANNELS):
                return time.monotonic() - started
            time.sleep(0.01)
    raise AssertionError(f"delivery did not come back within {timeout}s")


def stream(publisher: Collector, count: int, tag: str) -> list[str]:
    """Publish ``count`` messages per channel; the texts that were accepted."""
    ids = {}
    for n in range(count):
        for channel in CHANNELS:
            ids[publisher.send("publish", channel=channel, text=f"{tag} {n}")] = (channel, n)
    accepted = []
    for request_id, (channel, n) in ids.items():
        if publisher.reply(request_id)["type"] == "result":
            accepted.append(f"{channel}/{tag} {n}")
    return accepted


def received(subscriber: Collector, tag: str) -> set[str]:
    return {f"{m['channel']}/{m['text']}" for m in subscriber.of("message")
            if m["text"].startswith(tag)}


def assert_sessions_kept(server: ServerThread, *clients: Collector) -> None:
    assert all(client.closed is None for client in clients)
    assert len(server.service.sessions) == len(clients)


def test_redis_killed_and_restarted_mid_stream(own_redis):
    """SIGKILL + restart: all channels resubscribed, no session dropped, gap announced,
    presence rebuilt, delivery back within seconds."""
    with chatting(own_redis.url) as (server, publisher, subscriber):
        assert len(received(subscriber, "before")) == 0
        before = stream(publisher, 20, "before")
        wait_until(lambda: received(subscriber, "before") == set(before), 10, "first stream")
        in_flight = [publisher.send("publish", channel=c, text=f"flight {n}")
                     for n in range(50) for c in CHANNELS]
        # kill while the stream flows: some publishes answered, some not yet
        wait_until(lambda: sum(rid in publisher.replies for rid in in_flight) >= 30, 10,
                   "stream under way")
        own_redis.process.kill()  # type: ignore[union-attr]
        own_redis.process.wait()  # type: ignore[union-attr]
        killed = time.monotonic()
        outage = [publisher.request("publish", channel="alpha", text="down") for _ in range(5)]
        outage_reply = time.monotonic() - killed
        time.sleep(1.0)
        own_redis.start()
        restarted = time.monotonic()
        recovery = time_to_delivery(publisher, subscriber, 20)
        gaps = {g["channel"] for g in subscriber.of("gap")}
        accepted = [f"{CHANNELS[i % 3]}/flight {i // 3}" for i, rid in enumerate(in_flight)
                    if publisher.reply(rid)["type"] == "result"]
        lost = set(accepted) - received(subscriber, "flight")
        wait_until(lambda: server.call(server.service.store.presence("alpha"))
                   == ["pub", "sub"], 10, "presence rebuilt after Redis lost its data")
        healed = time.monotonic() - restarted
        print(f"\nkill+restart: 5 publishes answered 'unavailable' within {outage_reply:.2f}s; "
              f"delivery back {recovery:.2f}s after restart; presence rebuilt after "
              f"{healed:.2f}s; in-flight accepted {len(accepted)}, lost {len(lost)} "
              f"(announced by gap on {sorted(gaps)})")
        assert {r["code"] for r in outage} == {"unavailable"}
        assert gaps == set(CHANNELS)
        assert_sessions_kept(server, publisher, subscriber)
        after = stream(publisher, 20, "after")
        wait_until(lambda: received(subscriber, "after") == set(after), 10, "after stream")
        assert len(after) == 60


def test_a_stalled_redis_is_detected_by_the_probe_and_the_connection_rebuilt(own_redis):
    """SIGSTOP: the probe notices pub/sub went quiet and rebuilds it once Redis answers."""
    with chatting(own_redis.url) as (server, publisher, subscriber):
        broker = server.service.broker
        try:
            own_redis.pause()
            paused = time.monotonic()
            wait_until(lambda: not broker._connected.is_set(), 10, "stall detected")
            detected = time.monotonic() - paused
            time.sleep(max(0.0, 3.0 - detected))
            own_redis.resume()
            recovery = time_to_delivery(publisher, subscriber, 30)
            print(f"\nSIGSTOP: stall detected after {detected:.2f}s (probe every 0.2s); "
                  f"delivery back {recovery:.2f}s after SIGCONT; "
                  f"{broker._reconnects} reconnect(s)")
            wait_for_gaps(subscriber)
            assert_sessions_kept(server, publisher, subscriber)
        finally:
            own_redis.resume()


@pytest.mark.parametrize("broker", ["redis", "cluster"])
def test_a_paused_process_is_not_mistaken_for_a_lost_connection(server, broker):
    """A process that stops running for a while (a long garbage collection, a starved
    CPU) sends no probe meanwhile, so it finds none missing: no reconnect, no gap, and
    a subscribe right after the pause is answered. Two seconds is ten probe intervals."""
    alice, bob = Collector(server.ws_url, "alice"), Collector(server.ws_url, "bob")
    try:
        alice.ok("subscribe", channel="alpha")
        bob.ok("ping")
        server._loop.call_soon_threadsafe(time.sleep, 2.0)
        time.sleep(0.1)
        bob.ok("subscribe", channel="beta")  # waits for the pause, then is answered
        alice.ok("publish", channel="alpha", text="after the pause")
        wait_until(lambda: alice.of("message", text="after the pause"), 5, "delivery")
        health = server.call(server.service.broker.health())
        assert health["pubsub"] and health["reconnects"] == 0, health
        assert alice.of("gap") == bob.of("gap") == []
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize("fault", ["stall", "cut"])
def test_a_black_holed_or_cut_network_is_detected_and_healed(own_redis, fault):
    """Through a TCP proxy: silence (no FIN, no RST) or a dropped link, then healing."""
    with TcpProxy(own_redis.port) as proxy, \
            chatting(proxy.url) as (server, publisher, subscriber):
        broker = server.service.broker
        try:
            started = time.monotonic()
            getattr(proxy, fault)()
            wait_until(lambda: not broker._connected.is_set(), 10, f"{fault} detected")
            detected = time.monotonic() - started
            reply_started = time.monotonic()
            reply = publisher.request("publish", channel="alpha", text="during")
            reply_time = time.monotonic() - reply_started
            time.sleep(1.0)
            proxy.restore()
            recovery = time_to_delivery(publisher, subscriber, 30)
            print(f"\nproxy {fault}: detected after {detected:.2f}s; publish during the fault "
                  f"answered {reply.get('code', 'ok')} in {reply_time:.2f}s; delivery back "
                  f"{recovery:.2f}s after the network healed")
            assert reply["type"] == "error" and reply["code"] == "unavailable"
            wait_for_gaps(subscriber)
            assert_sessions_kept(server, publisher, subscriber)
        finally:
            proxy.restore()


def test_redis_dropping_the_subscriber_for_a_full_output_buffer_is_reported(own_redis, caplog):
    """client-output-buffer-limit kills our pub/sub client: logged, counted, gap sent."""
    caplog.set_level(logging.INFO, logger="quart_chat")
    with chatting(own_redis.url) as (server, publisher, subscriber), \
            redis.Redis.from_url(own_redis.url) as direct:
        broker = server.service.broker
        own_redis.cli("CONFIG", "SET", "client-output-buffer-limit", "pubsub 64kb 32kb 1")
        before = broker._reconnects
        probe = f"quart-chat:probe:{server.service.node_id}"
        started = time.monotonic()
        killed = direct.publish(probe, b"x" * (1024 * 1024))  # 1 MB: over the hard limit
        assert killed == 1
        wait_until(lambda: broker._reconnects > before, 15, "reconnect after the kill")
        reconnected = time.monotonic() - started
        wait_for_gaps(subscriber)
        recovery = time_to_delivery(publisher, subscriber, 15)
        info = own_redis.cli("INFO", "stats")
        print(f"\noutput-buffer kill: reconnected and resubscribed after {reconnected:.2f}s; "
              f"gap sent on {len(CHANNELS)} channels; delivery confirmed {recovery:.2f}s later "
              f"({[x for x in info.splitlines() if 'evicted' in x]})")
        assert "redis pub/sub lost" in caplog.text  # reported, never silent
        assert_sessions_kept(server, publisher, subscriber)


def test_a_long_outage_answers_unavailable_promptly_without_flooding_the_logs(own_redis,
                                                                              caplog):
    """Redis down for 10 s while clients keep publishing: prompt errors, few log lines."""
    caplog.set_level(logging.DEBUG, logger="quart_chat")
    with chatting(own_redis.url) as (server, publisher, subscriber):
        try:
            own_redis.stop()
            down = time.monotonic()
            first_record = len(caplog.records)
            latencies, codes = [], set()
            while time.monotonic() - down < 10:
                for channel in CHANNELS:
                    sent = time.monotonic()
                    reply = publisher.request("publish", channel=channel, text="anyone?")
                    latencies.append(time.monotonic() - sent)
                    codes.add(reply.get("code", "ok"))
                reply = subscriber.request("subscribe", channel=f"new-{len(latencies)}")
                codes.add(reply.get("code", "ok"))
                time.sleep(0.05)
            noisy = [r for r in caplog.records[first_record:] if r.levelno >= logging.WARNING]
            health = server.call(server.service.health())
            own_redis.start()
            recovery = time_to_delivery(publisher, subscriber, 30)
            print(f"\n10 s outage: {len(latencies)} publishes, all {sorted(codes)}, slowest reply "
                  f"{max(latencies) * 1000:.0f} ms; {len(noisy)} warning/error log lines; delivery "
                  f"back {recovery:.2f}s after restart")
            assert codes == {"unavailable"}
            assert len(latencies) > 50
            assert len(noisy) <= 10, [r.getMessage() for r in noisy]
            assert health["status"] == "unavailable"
            assert_sessions_kept(server, publisher, subscriber)
        finally:
            if own_redis.process is None:
                own_redis.start()
