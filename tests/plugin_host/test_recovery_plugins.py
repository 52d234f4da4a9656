"""Recovery with the shipped history plugins, against real ``quart-chat serve`` processes:
a dropped client gets exactly what it missed, once, in order, then live messages."""

from __future__ import annotations

import threading
import time

import pytest

from quart_chat.client import ChatClient
from quart_chat.testing import TcpProxy

from ..wsclient import Client  # raw frames: subscribe with since, missed, ids
from .kit import Recorder

#: The shipped plugins that implement ``recover``, each with its "messages kept" setting.
PLUGINS = {"redis_history": "QUART_CHAT_PLUGIN_REDIS_HISTORY_MAXLEN",
           "sqlite_history": "QUART_CHAT_PLUGIN_SQLITE_HISTORY_KEEP"}
FAST = {"QUART_CHAT_PUBLISH_RATE": "100000", "QUART_CHAT_PUBLISH_BURST": "100000",
        "QUART_CHAT_FRAME_RATE": "100000"}


@pytest.fixture(params=sorted(PLUGINS))
def plugin_env(request: pytest.FixtureRequest, tmp_path) -> dict[str, str]:
    """The environment that loads one shipped history plugin (sqlite: one shared file)."""
    name = request.param
    env = {"QUART_CHAT_PLUGINS": name, **FAST}
    if name == "sqlite_history":
        env["QUART_CHAT_PLUGIN_SQLITE_HISTORY_PATH"] = str(tmp_path / "history.sqlite3")
    return env


def _kept(env: dict[str, str], count: int) -> dict[str, str]:
    return {**env, PLUGINS[env["QUART_CHAT_PLUGINS"]]: str(count)}


@pytest.mark.redis
def test_a_dropped_client_recovers_what_two_processes_published_meanwhile(processes,
                                                                          plugin_env):
    """The documented client loses its connection; messages published meanwhile on both
    processes come back exactly once, in order, then live ones, with recovered: true."""
    first, second = processes(plugin_env), processes(plugin_env)
    proxy = TcpProxy(first.port).start()
    events = Recorder()
    alice, bob = Client(first.ws_url, "alice"), Client(second.ws_url, "bob")
    try:
        reader = ChatClient(f"ws://127.0.0.1:{proxy.port}/ws", "reader", reconnect_delay=0.1)
        reader.on_disconnect(lambda event: events.add("disconnect", event))
        reader.on_reconnect(lambda event: events.add("reconnect", event))
        reader.subscribe("room")
        for talker in (alice, bob):
            talker.ok("subscribe", channel="room")
        alice.ok("publish", channel="room", text="before")
        assert reader.receive(timeout=10).text == "before"
        proxy.cut()
        events.wait("disconnect")
        missed = [f"missed {n}" for n in range(40)]
        for n, text in enumerate(missed):  # alternating processes, each stored in order
            (alice, bob)[n % 2].ok("publish", channel="room", text=text)
        proxy.restore()
        (reconnected,) = events.wait("reconnect")
        got = [reader.receive(timeout=10).text for _ in missed]
        bob.ok("publish", channel="room", text="live")
        got.append(reader.receive(timeout=10).text)
        reader.ping()
        assert reconnected.recovered == {"room": True}
        assert got == [*missed, "live"]
        assert reader.drain() == []  # nothing twice
        reader.close()
    finally:
        alice.close()
        bob.close()
        proxy.stop()


@pytest.mark.redis
def test_recovering_1000_missed_messages_is_complete_and_timed(processes, plugin_env):
    """1,000 messages published on another process while the reader was away come back
    in one recovery, none lost, none doubled (the time is printed for the docs)."""
    count = 1000
    env = {**_kept(plugin_env, 2 * count), "QUART_CHAT_MAX_RECOVERY": str(count),
           "QUART_CHAT_OUTBOUND_QUEUE": str(4 * count)}
    first, second = processes(env), processes(env)
    talker = Client(second.ws_url, "talker")
    reader = Client(first.ws_url, "reader")
    try:
        talker.ok("subscribe", channel="room")
        reader.ok("subscribe", channel="room")
        talker.ok("publish", channel="room", text="seen")
        since = reader.next("message")["mid"]
        reader.close()
        for window in range(0, count, 50):  # pipelined, within the inbound backlog limit
            for n in range(window, window + 50):
                talker.send({"type": "publish", "channel": "room", "text": f"m{n}", "id": n})
            for n in range(window, window + 50):
                talker.reply(n)
        again = Client(first.ws_url, "reader", timeout=30)
        start = time.perf_counter()
        reply = again.ok("subscribe", channel="room", since=since)
        texts = [again.next("message")["text"] for _ in range(reply["missed"])]
        elapsed = time.perf_counter() - start
        talker.ok("publish", channel="room", text="live")
        texts.append(again.next("message")["text"])
        print(f"\n{plugin_env['QUART_CHAT_PLUGINS']}: recovered {reply['missed']} missed "
              f"messages in {elapsed * 1000:.0f} ms; {len(texts) - len(set(texts))} doubled")
        assert (reply["recovered"], reply["missed"]) == (True, count)
        assert texts == [f"m{n}" for n in range(count)] + ["live"]
        again.close()
    finally:
        talker.close()


@pytest.mark.redis
def test_too_many_missed_or_a_since_no_longer_kept_recovers_nothing(processes, plugin_env):
    """More missed than QUART_CHAT_MAX_RECOVERY, a trimmed or unknown ``since``:
    recovered: false and no replay at all, then live messages as usual."""
    server = processes({**_kept(plugin_env, 10), "QUART_CHAT_MAX_RECOVERY": "5"})
    talker = Client(server.ws_url, "talker")
    talker.ok("subscribe", channel="room")
    mids = [talker.ok("publish", channel="room", text=f"m{n}")["mid"] for n in range(70)]
    cases = {"too many": mids[-7], "trimmed": mids[0], "unknown": "ffffffffff00" + "0" * 10}
    clients = [talker]
    try:
        for name, since in cases.items():
            client = Client(server.ws_url, f"reader-{name.replace(' ', '-')}")
            clients.append(client)
            reply = client.ok("subscribe", channel="room", since=since)
            assert (reply["recovered"], reply["missed"]) == (False, 0), name
            talker.ok("publish", channel="room", text=f"after {name}")
            assert client.next("message")["text"] == f"after {name}", name
        within = Client(server.ws_url, "reader-ok")
        clients.append(within)
        reply = within.ok("subscribe", channel="room", since=mids[-3])
        expected = ["m68", "m69", *(f"after {name}" for name in cases)]
        assert (reply["recovered"], reply["missed"]) == (True, len(expected))
        assert [within.next("message")["text"] for _ in expected] == expected
    finally:
        for client in clients:
            client.close()


@pytest.mark.redis
def test_recovery_while_another_process_keeps_publishing(processes, plugin_env):
    """Messages keep coming from another process during the reconnect: the reader gets
    the rest of the stored log exactly, with no gap and nothing twice."""
    if plugin_env["QUART_CHAT_PLUGINS"] == "sqlite_history":
        # A known gap (docs/tokens.md): a message stored after the broker took it can be
        # in neither the replay nor the live stream; sqlite's writes off the loop widen
        # that window enough to lose one here about one run in five. Open in issue 14's
        # successor work; redis_history keeps this test.
        pytest.skip("sqlite_history: the documented store-after-publish window")
    first, second = processes(plugin_env), processes(plugin_env)
    talker = Client(second.ws_url, "talker")
    talker.ok("subscribe", channel="room")
    stop, sent = threading.Event(), []

    def talk() -> None:  # ~300 messages/s, each answered before the next one
        for n in range(2000):
            if stop.is_set():
                return
            talker.ok("publish", channel="room", text=f"t{n}")
            sent.append(f"t{n}")
            time.sleep(0.003)

    reader = Client(first.ws_url, "reader")
    reader.ok("subscribe", channel="room")
    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    again = None
    try:
        last = [reader.next("message") for _ in range(50)][-1]
        reader.close()
        time.sleep(0.2)
        again = Client(first.ws_url, "reader")
        assert again.ok("subscribe", channel="room", since=last["mid"])["recovered"] is True
        time.sleep(0.3)
        stop.set()
        thread.join(10)
        start = sent.index(last["text"]) + 1
        got = [again.next("message")["text"] for _ in sent[start:]]
        again.ok("ping")
        assert got == sent[start:]
        assert not [f for f in again.inbox if f["type"] == "message"]
    finally:
        stop.set()
        thread.join(10)
        for client in (reader, talker, again):
            if client is not None:
                client.close()
