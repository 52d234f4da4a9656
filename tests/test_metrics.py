"""``GET /metrics``: tests drive real traffic and read the Prometheus text format."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from quart_chat import Message, Rejected, hookimpl
from quart_chat.config import Settings
from quart_chat.testing import ServerProcess, ServerThread

from .wsclient import Client

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str) -> Samples:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check: Callable[[], bool], tries: int = 200) -> None:
    """Retry ``check`` (bounded); fail if it never holds."""
    for _ in range(tries):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition never held")


def test_metrics_count_connections_frames_messages_and_errors(server, connect):
    """Connections, subscriptions, frames by type, messages and errors move as traffic flows."""
    before = scrape(server.url)
    alice, bob = connect("alice"), connect("bob")
    alice.ok("subscribe", channel="metrics-room")
    bob.ok("subscribe", channel="metrics-room")
    for n in range(3):
        alice.ok("publish", channel="metrics-room", text=f"m{n}")
    alice.messages(3)
    bob.messages(3)
    alice.send("{not json")
    assert alice.next("error")["code"] == "bad_frame"
    assert alice.error("teleport")["code"] == "unknown_type"
    assert bob.error("publish", channel="elsewhere", text="x")["code"] == "not_subscribed"
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("quart_chat_connections_total") == 2
    assert delta("quart_chat_connections_open") == 2
    assert delta("quart_chat_subscriptions") == 2
    assert delta("quart_chat_channels_local") == 1
    assert delta("quart_chat_frames_in_total", type="subscribe") == 2
    assert delta("quart_chat_frames_in_total", type="publish") == 4
    assert delta("quart_chat_frames_in_total", type="invalid") == 2
    assert delta("quart_chat_messages_published_total") == 3
    assert delta("quart_chat_messages_delivered_total") == 6
    assert delta("quart_chat_frames_out_total", type="message") == 6
    assert delta("quart_chat_frames_out_total", type="welcome") == 2
    assert delta("quart_chat_frames_out_total", type="result") == 5
    assert delta("quart_chat_frames_out_total", type="error") == 3
    assert delta("quart_chat_errors_total", code="bad_frame") == 1
    assert delta("quart_chat_errors_total", code="unknown_type") == 1
    assert delta("quart_chat_errors_total", code="not_subscribed") == 1

    alice.close()
    bob.close()
    eventually(lambda: value(scrape(server.url), "quart_chat_connections_open")
               == value(before, "quart_chat_connections_open"))
    now = scrape(server.url)
    assert value(now, "quart_chat_subscriptions") == value(before, "quart_chat_subscriptions")
    assert value(now, "quart_chat_channels_local") == value(before, "quart_chat_channels_local")


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_slow_consumer_disconnect_and_queue_depth(settings):
    """A client that stops reading is counted as a slow consumer; its queue depth shows."""
    settings = settings.replace(outbound_queue=8, publish_burst=100_000, publish_rate=100_000.0)
    with ServerThread(settings) as server:
        before = scrape(server.url)
        slow = Client(server.ws_url, "slow")
        publisher = Client(server.ws_url, "publisher")
        try:
            slow.ok("subscribe", channel="firehose")
            publisher.ok("subscribe", channel="firehose")
            text = "x" * settings.max_text_length
            for _ in range(5000):  # bounded: far more than socket buffers hold
                publisher.ok("publish", channel="firehose", text=text)
                publisher.inbox.clear()
                if len(server.service.sessions) < 2:
                    break
            after = scrape(server.url)
            assert value(after, "quart_chat_slow_consumer_disconnects_total") - value(
                before, "quart_chat_slow_consumer_disconnects_total") == 1
        finally:
            slow.close()
            publisher.close()
    assert ("quart_chat_outbound_queue_depth_max", ()) in after
    assert ("quart_chat_outbound_queued_frames", ()) in after


def test_queue_depth_is_sampled_from_live_sessions(server, connect):
    """The queue-depth gauges report the frames sessions hold when /metrics is built."""
    from quart_chat import metrics

    alice = connect("alice")
    session = next(iter(server.service.sessions))

    async def fill_then_expose() -> str:
        # No await between filling and exposing: the writer cannot drain in between.
        for _ in range(5):
            session.deliver('{"type":"gap","channel":"x","reason":"test"}')
        body, _ = metrics.exposition(server.service)
        return body.decode()

    text = server.call(fill_then_expose())
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["quart_chat_outbound_queue_depth_max"] >= 5
    assert samples["quart_chat_outbound_queued_frames"] >= 5
    for _ in range(5):
        assert alice.next("gap")["reason"] == "test"


class Flaky:
    """filter_message that fails on "boom", stalls on "stall", passes the rest."""

    @hookimpl
    async def filter_message(self, message: Message) -> Message:
        if message.text == "boom":
            raise RuntimeError("plugin bug")
        if message.text == "stall":
            await asyncio.sleep(60)
        if message.text == "nope":
            raise Rejected("no")
        return message


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_plugin_hook_calls_failures_timeouts_and_latency(settings):
    """Each hook call is counted per plugin, with failures, timeouts and a latency histogram."""
    with ServerThread(settings.replace(hook_timeout=0.2), plugins=[Flaky()]) as server:
        before = scrape(server.url)
        client = Client(server.ws_url, "alice")
        try:
            client.ok("subscribe", channel="lobby")
            client.ok("publish", channel="lobby", text="fine")
            assert client.error("publish", channel="lobby", text="boom")["code"] == "internal"
            assert client.error("publish", channel="lobby", text="stall")["code"] == "internal"
            assert client.error("publish", channel="lobby", text="nope")["code"] == "rejected"
        finally:
            client.close()
        samples = scrape(server.url)
    labels = {"plugin": "Flaky", "hook": "filter_message"}

    def delta(name: str, **extra: str) -> float:
        return value(samples, name, **labels, **extra) - value(before, name, **labels, **extra)

    assert delta("quart_chat_plugin_hook_calls_total") == 4
    assert delta("quart_chat_plugin_hook_failures_total") == 1
    assert delta("quart_chat_plugin_hook_timeouts_total") == 1
    assert delta("quart_chat_plugin_hook_seconds_count") == 4
    assert delta("quart_chat_plugin_hook_seconds_bucket", le="+Inf") == 4
    assert delta("quart_chat_plugin_hook_seconds_sum") >= 0.2


@pytest.mark.redis
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_redis_reconnects_and_pubsub_liveness(settings, redis_server):
    """Pub/sub liveness reads 1, then 0 while Redis is down; a reconnect is counted."""
    with ServerThread(settings) as server:
        before = scrape(server.url)
        assert value(before, "quart_chat_redis_pubsub_up") == 1
        redis_server.stop()
        eventually(lambda: value(scrape(server.url), "quart_chat_redis_pubsub_up") == 0)
        redis_server.start()
        # at least one: on a loaded machine the probe may also call the fresh connection
        # stalled once and reconnect again, which is counted too
        eventually(lambda: value(scrape(server.url), "quart_chat_redis_reconnects_total")
                   >= value(before, "quart_chat_redis_reconnects_total") + 1)
        eventually(lambda: value(scrape(server.url), "quart_chat_redis_pubsub_up") == 1)
        # Let the service finish restoring its records before it stops (it does not wait).
        eventually(lambda: not server.service._background)


@pytest.mark.redis
def test_metrics_add_up_across_workers(redis_url):
    """With ``--workers 2`` every scrape reports the sessions of both workers."""
    env = {"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_WORKERS": "2"}
    with ServerProcess(env) as server:
        clients = [Client(server.ws_url, f"c{n}") for n in range(10)]
        try:
            sessions: dict[str, int] = {}
            for _ in range(40):
                with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
                    health = json.load(response)
                sessions[health["node"]] = health["sessions"]
            if len(sessions) == 2:  # both workers answered: they share the 10 sessions
                assert sum(sessions.values()) == 10
            for _ in range(10):  # whichever worker answers, the totals are the same
                samples = scrape(server.url)
                assert value(samples, "quart_chat_connections_open") == 10
                assert value(samples, "quart_chat_connections_total") == 10
            clients[0].ok("subscribe", channel="w")
            clients[0].ok("publish", channel="w", text="hi")
            assert value(scrape(server.url), "quart_chat_messages_published_total") == 1
        finally:
            for client in clients:
                client.close()
        eventually(lambda: value(scrape(server.url), "quart_chat_connections_open") == 0)


def test_metrics_work_with_default_settings():
    """``/metrics`` needs no configuration."""
    with ServerThread(Settings()) as server:
        samples = scrape(server.url)
        assert ("quart_chat_connections_open", ()) in samples
