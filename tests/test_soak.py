"""Soak: many connect/subscribe/disconnect cycles leave nothing behind.

10,000 cycles with each broker (about 15 s embedded, 30 s with Redis, on a 2-core
machine, after 2,000 warm-up cycles); ``QUART_CHAT_SOAK_CYCLES`` changes the number.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from quart_chat.testing import ServerProcess

from .helpers import health, rss_kib, settled, wait_until

ROOT = Path(__file__).parent.parent
WARM_UP = 2000

CYCLES = {"memory": 10_000, "redis": 10_000}
if os.environ.get("QUART_CHAT_SOAK_CYCLES"):
    CYCLES = dict.fromkeys(CYCLES, int(os.environ["QUART_CHAT_SOAK_CYCLES"]))
CONCURRENCY = 20


async def cycles(ws_url: str, count: int) -> int:
    """``count`` cycles by ``CONCURRENCY`` workers: connect, subscribe, publish, leave."""
    done = 0

    async def worker(w: int) -> None:
        nonlocal done
        while done < count:
            done += 1
            n = done
            async with websockets.connect(f"{ws_url}?client_id=soak{w}") as ws:
                await ws.recv()
                await ws.send(f'{{"type":"subscribe","id":1,"channel":"room{n % 50}"}}')
                await ws.recv()
                if n % 10 == 0:
                    await ws.send(f'{{"type":"publish","id":2,"channel":"room{n % 50}",'
                                  f'"text":"cycle {n}"}}')
                    await ws.recv()

    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return done


def server_state(server: ServerProcess) -> dict[str, int]:
    with urllib.request.urlopen(f"{server.url}/_tasks", timeout=5) as response:
        tasks = json.load(response)["tasks"]
    return {"tasks": tasks, **{k: v for k, v in health(server.url).items()
                               if k in ("sessions", "channels")}}


def settle(server: ServerProcess, tasks: int) -> dict[str, int]:
    """Wait until no session is left and the task count is back to ``tasks``."""
    return wait_until(lambda: (s := server_state(server))["sessions"] == 0
                      and s["tasks"] <= tasks and s, 15, "server idle again")


@pytest.mark.parametrize("broker", list(CYCLES), indirect=True)  # not on the cluster: too slow
def test_ten_thousand_cycles_leave_rss_and_tasks_at_baseline(broker, redis_server, request):
    """Connect/subscribe/disconnect N times: tasks back to baseline, server RSS bounded,
    no record left behind."""
    env = {"QUART_CHAT_MAX_CONNECTIONS_PER_CLIENT": str(CONCURRENCY * 2),
           "QUART_CHAT_PLUGINS": "tests.soak_probe_plugin",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if broker == "redis":
        env["QUART_CHAT_REDIS_URL"] = request.getfixturevalue("redis_url")
    with ServerProcess(env) as server:
        # Warm-up: the allocator's high-water mark and every cache and pool settle here
        # (the first couple of thousand cycles grow RSS by tens of MB, on main too).
        asyncio.run(cycles(server.ws_url, WARM_UP))
        settle(server, 10**6)
        time.sleep(1.0)  # let the warm-up's last tasks finish
        idle = server_state(server)  # (also collects garbage and trims the allocator)
        rss_before = rss_kib(server.pid)
        started = time.monotonic()
        ran = asyncio.run(cycles(server.ws_url, CYCLES[broker]))
        elapsed = time.monotonic() - started
        after = settle(server, idle["tasks"])
        server_state(server)
        growth = rss_kib(server.pid) - rss_before
        leftover: list[str] = []
        if broker == "redis":
            def records() -> list[str]:
                return redis_server.cli("--scan", "--pattern", "quart-chat:*").split()

            leftover = settled(records, 10)  # the node entry goes at its next beat
        print(f"\nsoak ({broker}): {ran} cycles in {elapsed:.1f}s after {WARM_UP} warm-up; "
              f"server tasks {idle['tasks']} -> {after['tasks']}; server RSS growth "
              f"{growth} KiB ({growth * 1024 // max(ran, 1)} bytes/cycle); "
              f"{len(leftover)} records left")
        assert ran >= CYCLES[broker]
        assert after["tasks"] <= idle["tasks"]
        assert after["channels"] == 0
        assert growth < 8 * 1024  # after gc + malloc_trim: measured < 1 MB
        assert leftover == []
