"""Recovery after reconnect: ``subscribe`` with ``since`` replays exactly what was missed,
in order, once, before live messages, and says whether recovery was complete."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from quart_chat import Message, hookimpl
from quart_chat.protocol import encode_message, new_mid
from quart_chat.recovery import REPLAY_CLOCK_SLACK
from quart_chat.testing import ServerThread

from .helpers import Collector, wait_until
from .wsclient import Client


class Journal:
    """An inline persistence plugin: per-channel logs with increasing offsets."""

    def __init__(self, keep: int = 10_000) -> None:
        self.logs: dict[str, list[Message]] = {}
        self.keep = keep
        self.lock = threading.Lock()

    @hookimpl
    def message_published(self, message: Message) -> None:
        with self.lock:
            log = self.logs.setdefault(message.channel, [])
            log.append(message)
            del log[: max(0, len(log) - self.keep)]  # trimmed like a capped stream

    @hookimpl
    def recover(self, channel: str, since: str, limit: int) -> list[Message] | None:
        with self.lock:
            log = list(self.logs.get(channel, ()))
        for offset, message in enumerate(log):
            if message.mid == since:
                return log[offset + 1: offset + 1 + limit]
        return None  # unknown or trimmed: cannot prove nothing was lost

    def texts(self, channel: str) -> list[str]:
        with self.lock:
            return [m.text for m in self.logs.get(channel, ())]


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for f in frames]


def test_hook_recover_a_reconnecting_client_gets_exactly_the_missed_messages_in_order(
        make_server, opened):
    """Missed while away: replayed after ``recovered: true``, then live ones; none twice."""
    journal = Journal()
    server = make_server(plugins=(journal,))
    talker = opened(server, "talker")
    talker.ok("subscribe", channel="room")
    reader = opened(server, "reader")
    reader.ok("subscribe", channel="room")
    for n in range(5):
        talker.ok("publish", channel="room", text=f"m{n}")
    seen = reader.messages(5)
    reader.close()
    for n in range(5, 15):
        talker.ok("publish", channel="room", text=f"m{n}")
    again = opened(server, "reader")
    reply = again.ok("subscribe", channel="room", since=seen[-1]["mid"])
    talker.ok("publish", channel="room", text="live")
    frames = again.messages(11)
    print(f"\nrecovery: {reply['missed']} missed messages replayed, recovered={reply['recovered']}")
    assert reply["recovered"] is True and reply["missed"] == 10
    assert texts(frames) == [f"m{n}" for n in range(5, 15)] + ["live"]
    assert again.ok("ping")  # and nothing else was queued in between
    assert not [f for f in again.inbox if f["type"] == "message"]


def recovered_then_late(server: Any, opened: Any, journal: Journal,
                        first: tuple[Message, ...] = ()) -> list[str]:
    """m0..m2 are published; a reader recovers m1, m2 after m0; then the broker hands
    over ``first`` and the live frames of m1 and m2, and "after" is published. The texts
    the reader gets (checked to be all it gets)."""
    talker = opened(server, "talker")
    talker.ok("subscribe", channel="room")
    for n in range(3):
        talker.ok("publish", channel="room", text=f"m{n}")
    since, replayed = journal.logs["room"][0], journal.logs["room"][1:]
    reader = opened(server, "reader")
    assert reader.ok("subscribe", channel="room", since=since.mid)["missed"] == 2

    async def late_frames() -> None:  # what the broker does when Redis hands them over now
        for message in (*first, *replayed):
            server.service.hub.deliver("room", encode_message(message))

    server.call(late_frames())
    talker.ok("publish", channel="room", text="after")
    got = texts(reader.messages(3 + len(first)))
    reader.ok("ping")
    assert not [f for f in reader.inbox if f["type"] == "message"]
    return got


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_a_live_frame_coming_after_its_replay_is_not_sent_twice(make_server, opened):
    """A message is stored once the broker took it, so its live frame can still be on its
    way through Redis when a recovery replays it: that late frame is dropped, and the
    messages after it are delivered as usual."""
    journal = Journal()
    server = make_server(plugins=(journal,))
    assert recovered_then_late(server, opened, journal) == ["m1", "m2", "after"]


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_a_late_frame_coming_after_a_frame_from_a_clock_ahead_is_not_sent_twice(make_server,
                                                                                  opened):
    """Another process's clock may run ahead by more than REPLAY_CLOCK_SLACK: its frame,
    arriving between the replay and a late frame, must not end the late frames' check."""
    journal = Journal()
    server = make_server(plugins=(journal,))
    ahead = time.time() + 10 * REPLAY_CLOCK_SLACK
    from_ahead = Message(channel="room", sender="other", text="ahead", ts=ahead,
                         mid=new_mid(ahead))
    got = recovered_then_late(server, opened, journal, first=(from_ahead,))
    assert got == ["m1", "m2", "ahead", "after"]


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_a_live_frame_that_comes_again_after_the_replay_is_not_sent_twice(make_server, opened):
    """A message's live frame can come twice (redis-py resends a PUBLISH whose reply timed
    out): held during the recovery and then again after it, it is still sent once."""
    server_box: list[Any] = []

    class Overlapping(Journal):
        """Recovers from its log while the first live frames come in (they are held)."""

        @hookimpl
        async def recover(self, channel: str, since: str, limit: int) -> list[Message] | None:
            missed = Journal.recover(self, channel, since, limit)
            for message in missed or ():
                server_box[0].service.hub.deliver(channel, encode_message(message))
            return missed

    journal = Overlapping()
    server = make_server(plugins=(journal,))
    server_box.append(server)
    assert recovered_then_late(server, opened, journal) == ["m1", "m2", "after"]


def test_recovery_while_messages_keep_flowing_has_no_gap_and_no_duplicate(make_server):
    """Live messages published during the replay are held back and sent once, after it."""
    journal = Journal()
    server = make_server(plugins=(journal,), publish_rate=10_000, publish_burst=10_000)
    reader = Collector(server.ws_url, "reader")
    reader.ok("subscribe", channel="room")
    talker = Collector(server.ws_url, "talker")
    talker.ok("subscribe", channel="room")
    stop = threading.Event()
    count = [0]

    def talk() -> None:
        while not stop.is_set() and count[0] < 3000:
            talker.send("publish", channel="room", text=f"t{count[0]}")
            count[0] += 1
            if count[0] % 5 == 0:
                time.sleep(0.01)  # ~400 messages/s

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(reader.of("message")) >= 200, 20, "first messages")
        reader.close()
        last = reader.of("message")[-1]
        time.sleep(0.2)  # messages flow while the reader is away
        again = Collector(server.ws_url, "reader")
        reply = again.request("subscribe", channel="room", since=last["mid"])
        time.sleep(0.3)  # ... and during and after its recovery
    finally:
        stop.set()
        thread.join(10)
    total = count[0]
    wait_until(lambda: all(n in talker.replies for n in range(2, total + 2)), 20, "all answered")
    log = journal.texts("room")
    assert len(log) == total  # every publish was accepted and stored
    wait_until(lambda: again.of("message") and again.of("message")[-1]["text"] == log[-1],
               20, "reader caught up")
    start = log.index(last["text"]) + 1
    got = texts(again.of("message"))
    print(f"\nrecovery under load: {reply['missed']} replayed + {len(got) - reply['missed']} "
          f"live; {len(log) - start - len(got)} lost, {len(got) - len(set(got))} duplicated")
    assert reply["recovered"] is True
    assert got == log[start:]  # exactly the rest of the log: no gap, no duplicate, in order
    again.close()
    talker.close()


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_hook_recover_unknown_or_trimmed_positions_and_too_many_are_never_partial(make_server,
                                                                            opened):
    """``recovered: false`` and nothing replayed when the gap cannot be proven complete."""
    journal = Journal(keep=5)
    server = make_server(plugins=(journal,), max_recovery=3, publish_rate=1000,
                         publish_burst=1000)
    talker = opened(server, "talker")
    talker.ok("subscribe", channel="room")
    first = talker.ok("publish", channel="room", text="first")["mid"]
    for n in range(10):
        talker.ok("publish", channel="room", text=f"m{n}")
    cases = {
        "trimmed": first,  # fell out of the 5-message log
        "unknown": "ffffffffffff0000000000",
        "too many": journal.logs["room"][0].mid,  # 4 missed > max_recovery 3
    }
    for name, since in cases.items():
        client = opened(server, f"reader-{name.replace(' ', '-')}")
        reply = client.ok("subscribe", channel="room", since=since)
        assert (reply["recovered"], reply["missed"]) == (False, 0), name
        talker.ok("publish", channel="room", text=f"after {name}")
        assert client.next()["text"] == f"after {name}"  # live messages, no replay
    within = opened(server, "reader-ok")
    reply = within.ok("subscribe", channel="room", since=journal.logs["room"][-3].mid)
    assert (reply["recovered"], reply["missed"]) == (True, 2)


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_without_a_recovering_plugin_the_client_is_told_recovery_failed(make_server, opened):
    server = make_server()
    client = opened(server, "alice")
    reply = client.ok("subscribe", channel="room", since="0000000000000000000000")
    assert (reply["recovered"], reply["missed"]) == (False, 0)


@pytest.mark.redis
def test_recovery_across_processes(redis_url):
    """Messages published on one process are recovered by a client reconnecting to another."""
    from quart_chat.config import Settings

    journal = Journal()  # shared, like a Redis Stream both processes write to
    settings = Settings(redis_url=redis_url)
    with ServerThread(settings, plugins=(journal,)) as one, \
            ServerThread(settings, plugins=(journal,)) as two:
        talker = Client(one.ws_url, "talker")
        talker.ok("subscribe", channel="room")
        reader = Client(one.ws_url, "reader")
        reader.ok("subscribe", channel="room")
        talker.ok("publish", channel="room", text="seen")
        last = reader.next()
        reader.close()
        for n in range(20):
            talker.ok("publish", channel="room", text=f"m{n}")
        again = Client(two.ws_url, "reader")
        reply = again.ok("subscribe", channel="room", since=last["mid"])
        assert (reply["recovered"], reply["missed"]) == (True, 20)
        assert texts(again.messages(20)) == [f"m{n}" for n in range(20)]
        talker.close()
        again.close()


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_the_python_client_recovers_missed_messages_on_reconnect(make_server, opened):
    """ChatClient resubscribes with ``since`` after a drop: the missed messages arrive,
    in order, and the Reconnected event says recovery was complete."""
    from quart_chat.client import ChatClient

    journal = Journal()
    server = make_server(plugins=(journal,))
    talker = opened(server, "talker")
    talker.ok("subscribe", channel="room")
    events = []
    with ChatClient(server.ws_url, "reader", reconnect_delay=1.0) as reader:
        reader.on_reconnect(events.append)
        reader.subscribe("room")
        talker.ok("publish", channel="room", text="before")
        assert reader.receive(timeout=5).text == "before"
        session = next(s for s in server.service.sessions if s.client_id == "reader")
        server._loop.call_soon_threadsafe(session.close, 1011, "test drop")
        wait_until(lambda: session.finished.is_set(), 5, "dropped")
        for n in range(5):  # published while the reader is away (it waits 1 s)
            talker.ok("publish", channel="room", text=f"missed {n}")
        wait_until(lambda: events, 10, "reconnected")
        got = [reader.receive(timeout=5).text for _ in range(5)]
        talker.ok("publish", channel="room", text="live")
        got.append(reader.receive(timeout=5).text)
        assert events[0].recovered == {"room": True}
        assert got == [f"missed {n}" for n in range(5)] + ["live"]
