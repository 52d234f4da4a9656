"""Helpers for the Redis Cluster and Sentinel tests: server processes, a publisher that
keeps publishing through failures, and a reader that keeps frames in arrival order."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from quart_chat.testing import ServerProcess

from .wsclient import Client

#: Publishing is not what these tests measure: lift the per-session rate limit.
FAST = {"QUART_CHAT_PUBLISH_RATE": "1000000", "QUART_CHAT_PUBLISH_BURST": "1000000",
        "QUART_CHAT_REDIS_PROBE_INTERVAL": "0.2", "QUART_CHAT_LOG_LEVEL": "info"}

Frame = dict[str, Any]


@contextlib.contextmanager
def servers(redis_url: str, count: int = 2) -> Iterator[list[ServerProcess]]:
    """``count`` server processes on ``redis_url``; on failure their logs are shown."""
    procs = [ServerProcess({**FAST, "QUART_CHAT_REDIS_URL": redis_url}) for _ in range(count)]
    try:
        for proc in procs:
            proc.start()
        yield procs
    except BaseException:
        for proc in procs:
            if proc.process is not None:
                print(f"--- server :{proc.port} log ---\n{proc.log()[-6000:]}")
        raise
    finally:
        for proc in procs:
            proc.stop()


class Publisher(threading.Thread):
    """Publishes ``0, 1, 2...`` to one channel until stopped; ``unavailable`` is retried
    with the next number, so a number is never published twice."""

    def __init__(self, client: Client, channel: str, limit: int = 200_000) -> None:
        super().__init__(daemon=True)
        self.client, self.channel, self.limit = client, channel, limit
        self.acked: list[int] = []
        self.refused = 0
        self.failure: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            for seq in range(self.limit):
                if self.halt.is_set():
                    return
                reply = self.client.request("publish", channel=self.channel, text=str(seq))
                if reply["type"] == "result":
                    self.acked.append(seq)
                else:
                    assert reply["code"] == "unavailable", reply
                    self.refused += 1
                    time.sleep(0.02)
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` more publishes were accepted (bounded)."""
        target = len(self.acked) + count
        deadline = time.monotonic() + timeout
        while len(self.acked) < target and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.01)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        if self.failure is not None:
            raise self.failure


def read_until(client: Client, done: Callable[[list[Frame]], bool],
               frames: list[Frame] | None = None, limit: int = 500_000) -> list[Frame]:
    """Frames in arrival order (the inbox first) until ``done(frames)``."""
    frames = [] if frames is None else frames
    frames.extend(client.inbox)
    client.inbox.clear()
    for _ in range(limit):
        if done(frames):
            return frames
        frames.append(client.recv())
    raise AssertionError(f"gave up after {limit} frames")


def has_gap(channel: str) -> Callable[[list[Frame]], bool]:
    return lambda frames: any(f["type"] == "gap" and f["channel"] == channel for f in frames)


def has_text(channel: str, text: str) -> Callable[[list[Frame]], bool]:
    return lambda frames: any(f["type"] == "message" and f["channel"] == channel
                              and f["text"] == text for f in frames)


def check_stream(frames: list[Frame], channel: str) -> tuple[list[int], list[int]]:
    """Numbers received on ``channel`` before and after its (first) gap frame.

    Asserts the promises: strictly increasing (once, in order) throughout, and no hole
    after the gap notice; holes may only come before it.
    """
    before: list[int] = []
    after: list[int] | None = None
    for frame in frames:
        if frame.get("channel") != channel:
            continue
        if frame["type"] == "gap" and after is None:
            after = []
        elif frame["type"] == "message" and frame["text"].isdigit():
            (before if after is None else after).append(int(frame["text"]))
    after = after or []
    numbers = before + after
    assert numbers == sorted(set(numbers)), "duplicated or out of order"
    if after:
        assert after == list(range(after[0], after[0] + len(after))), "a hole after the gap"
    return before, after


def pair(one: ServerProcess, two: ServerProcess, channels: list[str],
         timeout: float) -> tuple[Client, Client]:
    """A talker on ``one`` and a listener on ``two``, both subscribed to ``channels``."""
    talker = Client(one.ws_url, "talker", timeout=timeout)
    listener = Client(two.ws_url, "listener", timeout=timeout)
    for client in (talker, listener):
        for channel in channels:
            client.ok("subscribe", channel=channel)
    return talker, listener


def stream_through(talker: Client, listener: Client, channel: str,
                   disrupt: Callable[[], None]) -> tuple[Publisher, list[Frame]]:
    """Publish ``0, 1, 2...`` to ``channel``; ``disrupt()`` after 200 are accepted, read
    the listener until its gap notice, and stop once 200 more were accepted."""
    publisher = Publisher(talker, channel)
    publisher.start()
    try:
        publisher.wait_acked(200)
        disrupt()
        frames = read_until(listener, has_gap(channel))
        publisher.wait_acked(200)
    finally:
        publisher.stop()
    return publisher, frames
