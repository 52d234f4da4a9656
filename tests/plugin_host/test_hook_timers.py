"""register_timers: periodic functions, once per period across processes; the uptime example."""

from __future__ import annotations

import collections
import logging
import math
import time

import pytest

from quart_chat import ChatClient, Message, hookimpl
from quart_chat.errors import ConfigError
from quart_chat.testing import ServerThread

from .kit import WAIT, load_example

uptime = load_example("uptime")

PERIOD = 0.5


class Ticker:
    """Two timers: one publishes each period, one always fails."""

    BOT_NAME = "ticker"

    def __init__(self) -> None:
        self.runs = 0

    @hookimpl
    def register_timers(self):
        async def tick(bot):
            self.runs += 1
            await bot.publish("ticks", f"tick {self.runs}")

        def broken(bot):
            raise RuntimeError("boom")

        return [(PERIOD, tick), (PERIOD, broken)]


def test_hook_register_timers_run_every_period_with_the_plugin_bot(serve, caplog):
    ticker = Ticker()
    server = serve(ticker)
    client = server.connect("watcher")
    client.subscribe("ticks")
    with caplog.at_level(logging.ERROR, "quart_chat"):
        first, second = client.receive(WAIT), client.receive(WAIT)
    assert (first.sender, first.bot) == ("ticker", True)
    assert second.ts - first.ts == pytest.approx(PERIOD, abs=0.25)
    assert "timer Ticker:Ticker.register_timers.<locals>.broken raised" in caplog.text


def test_hook_register_timers_a_bad_entry_stops_startup_naming_the_plugin():
    class Bad:
        @hookimpl
        def register_timers(self):
            return [(0, lambda bot: None)]

    with pytest.raises(ConfigError, match="plugin Bad: bad timer"):
        ServerThread(plugins=[Bad()])


def _periods(messages: list[Message], seconds: float) -> collections.Counter[int]:
    return collections.Counter(math.floor(m.ts / seconds) for m in messages)


@pytest.mark.redis
def test_hook_register_timers_run_once_per_period_across_two_processes(processes):
    """Two processes load the uptime bot; each period exactly one of them posts."""
    env = {"QUART_CHAT_PLUGINS": "uptime", "QUART_CHAT_PLUGIN_UPTIME_SECONDS": str(PERIOD),
           "QUART_CHAT_PLUGIN_UPTIME_CHANNEL": "status"}
    first, second = processes(env), processes(env)
    watcher = ChatClient(first.ws_url, "watcher")
    try:
        watcher.subscribe("status")
        started = time.time()
        messages = [watcher.receive(WAIT) for _ in range(8)]
        elapsed = time.time() - started
    finally:
        watcher.close()
    counts = _periods(messages, PERIOD)
    assert max(counts.values()) == 1, counts  # never twice in one period
    assert elapsed < 8 * PERIOD + 2  # and not skipping periods either
    assert all(m.sender == "uptime" and m.text.startswith("up ") for m in messages)
    assert second.process is not None and second.process.poll() is None


def test_uptime_posts_its_heartbeat_with_the_watchers(serve, monkeypatch):
    monkeypatch.setenv("QUART_CHAT_PLUGIN_UPTIME_SECONDS", str(PERIOD))
    server = serve(uptime)
    for name in ("alice", "bob"):
        server.connect(name).subscribe("status")
    # A period may have started between the two subscribes: read on until one counts both.
    messages = [server.clients[0].receive(WAIT) for _ in range(2)]
    assert all(message.sender == "uptime" for message in messages)
    assert messages[-1].text.endswith("; 2 watching"), messages
    assert uptime.describe(3725) == "1h 02m" and uptime.describe(65) == "1m 05s"
