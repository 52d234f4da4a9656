"""What the plugin hooks cost on the publish path: delivered messages per second.

Runs the same load against two ``quart-chat serve`` processes on one private
redis-server (started here on a free loopback port, stopped by PID at the end):

- ``bare``:    no plugins;
- ``plugins``: moderation (filter) + redis_history (XADD per message) + command_bot.

The rounds alternate (bare, plugins, bare, plugins, ...) so both see the same machine
state; the median of each is reported. Every client subscribes to one channel; the
publishers send ``--messages`` each with at most ``--window`` publishes in flight, and a
round ends when every client received every message (or ``--timeout`` passes).

Throughput on a shared machine is noisy, so two steadier numbers are reported too: the
CPU time the server and redis-server spent per published message (from /proc), and
the CPU time of the publish path alone (``ChatService.publish_message`` in this process with
the Redis broker, no sockets) with and without the plugins.

    python bench/plugins_cost.py                      # defaults: 3 rounds, 4 x 2000 messages
    python bench/plugins_cost.py --rounds 5 --subscribers 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import websockets

from quart_chat.testing import RedisServer, ServerProcess

REPO = Path(__file__).resolve().parents[1]
PLUGINS = "moderation,redis_history,command_bot"


async def _client(url: str, name: str) -> websockets.ClientConnection:
    ws = await websockets.connect(f"{url}?client_id={name}", max_queue=None)
    json.loads(await ws.recv())  # welcome
    await ws.send(json.dumps({"type": "subscribe", "id": 0, "channel": "bench"}))
    while json.loads(await ws.recv()).get("id") != 0:
        pass
    return ws


async def _one_round(url: str, publishers: int, subscribers: int, messages: int,
                     window: int, limit: float) -> tuple[float, int]:
    """(delivered messages per second, deliveries) for one run of the load."""
    senders = [await _client(url, f"pub{n}") for n in range(publishers)]
    listeners = [await _client(url, f"sub{n}") for n in range(subscribers)]
    expected = publishers * messages
    delivered = 0
    results: dict[int, asyncio.Queue[None]] = {}

    async def read(ws: websockets.ClientConnection, queue: asyncio.Queue[None] | None) -> None:
        nonlocal delivered
        seen = 0
        while seen < expected:
            frame = json.loads(await ws.recv())
            kind = frame["type"]
            if kind == "message":
                seen += 1
                delivered += 1
            elif kind == "result" and queue is not None:
                queue.put_nowait(None)
            elif kind == "error":
                raise RuntimeError(f"server error: {frame}")

    async def publish(index: int, ws: websockets.ClientConnection) -> None:
        queue = results[index]
        in_flight = 0
        for n in range(messages):
            if in_flight >= window:
                await queue.get()
                in_flight -= 1
            await ws.send(json.dumps({"type": "publish", "id": n + 1, "channel": "bench",
                                      "text": f"hello from {index}, message {n}"}))
            in_flight += 1

    for index in range(publishers):
        results[index] = asyncio.Queue()
    readers = [asyncio.create_task(read(ws, results[i])) for i, ws in enumerate(senders)]
    readers += [asyncio.create_task(read(ws, None)) for ws in listeners]
    start = time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*readers, *(publish(i, ws) for i, ws in enumerate(senders))),
            limit)
    finally:
        elapsed = time.perf_counter() - start
        for task in readers:
            task.cancel()
        for ws in senders + listeners:
            await ws.close()
    return delivered / elapsed, delivered


async def _publish_path(url: str, plugins: list[object], count: int) -> float:
    """CPU microseconds per ``ChatService.publish`` in this process (no sockets at all)."""
    from quart_chat import Settings, chat_service, create_app
    from quart_chat.protocol import Message, new_mid

    app = create_app(Settings(redis_url=url, log_level="error"), plugins=plugins)
    service = chat_service(app)
    await service.start(app)
    ts = time.time()
    messages = [Message(channel="path", sender="bench", text=f"hello {n}", ts=ts,
                        mid=new_mid(ts)) for n in range(count)]
    start = time.process_time()
    for message in messages:
        await service.publish_message(message, None)
    elapsed = time.process_time() - start
    await service.stop(app)
    return elapsed / count * 1e6


def _loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): robust to a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--subscribers", type=int, default=12)
    parser.add_argument("--messages", type=int, default=2000, help="per publisher")
    parser.add_argument("--window", type=int, default=32, help="publishes in flight each")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per round")
    args = parser.parse_args()

    env_common = {
        "QUART_CHAT_PUBLISH_RATE": "1000000", "QUART_CHAT_PUBLISH_BURST": "1000000",
        "QUART_CHAT_OUTBOUND_QUEUE": "100000", "QUART_CHAT_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    }
    rates: dict[str, list[float]] = {"bare": [], "plugins": []}
    server_cpu: dict[str, list[float]] = {"bare": [], "plugins": []}
    redis_cpu: dict[str, list[float]] = {"bare": [], "plugins": []}
    published = args.publishers * args.messages
    with RedisServer() as redis:
        env_common["QUART_CHAT_REDIS_URL"] = redis.url
        env_common["QUART_CHAT_PLUGIN_REDIS_HISTORY_MAXLEN"] = "1000"
        servers = {
            "bare": ServerProcess({**env_common, "QUART_CHAT_PLUGINS": ""}),
            "plugins": ServerProcess({**env_common, "QUART_CHAT_PLUGINS": PLUGINS}),
        }
        try:
            for server in servers.values():
                server.start()
            for round_no in range(1, args.rounds + 1):
                for name, server in servers.items():
                    assert redis.process is not None
                    cpu = _cpu_seconds(server.pid), _cpu_seconds(redis.process.pid)
                    rate, count = asyncio.run(_one_round(
                        server.ws_url, args.publishers, args.subscribers, args.messages,
                        args.window, args.timeout))
                    server_us = (_cpu_seconds(server.pid) - cpu[0]) / published * 1e6
                    redis_us = (_cpu_seconds(redis.process.pid) - cpu[1]) / published * 1e6
                    rates[name].append(rate)
                    server_cpu[name].append(server_us)
                    redis_cpu[name].append(redis_us)
                    print(f"round {round_no} {name:8} {rate:8.0f} delivered msg/s "
                          f"({count} deliveries); CPU per published message: server "
                          f"{server_us:5.0f} us, redis {redis_us:4.0f} us", flush=True)
        finally:
            for server in servers.values():
                server.__exit__(None, None, None)
        sys.path.insert(0, str(REPO / "plugins"))
        import command_bot
        import moderation
        import redis_history

        path: dict[str, list[float]] = {"bare": [], "plugins": []}
        run = _loop_runner()  # the loop the server uses
        for _ in range(args.rounds):
            path["bare"].append(run(_publish_path(redis.url, [], 3000)))
            path["plugins"].append(run(_publish_path(
                redis.url, [moderation, redis_history, command_bot], 3000)))
    bare, plugged = statistics.median(rates["bare"]), statistics.median(rates["plugins"])
    print(f"\nload: {args.publishers} publishers x {args.messages} messages, "
          f"{args.publishers + args.subscribers} subscribers, window {args.window}, "
          f"python {sys.version.split()[0]}")
    med = statistics.median
    for name, label in (("bare", "bare:   "), ("plugins", "plugins:")):
        print(f"median {label} {med(rates[name]):8.0f} delivered msg/s; CPU per published "
              f"message: server {med(server_cpu[name]):5.0f} us, redis "
              f"{med(redis_cpu[name]):4.0f} us")
    print(f"publish path alone (in-process ChatService.publish, Redis broker, no sockets): "
          f"bare {med(path['bare']):.0f} us, plugins {med(path['plugins']):.0f} us CPU "
          "per message")
    print(f"plugins = {PLUGINS}")
    print(f"cost: {100 * (1 - plugged / bare):.1f}% fewer deliveries per second; server CPU "
          f"x{med(server_cpu['plugins']) / med(server_cpu['bare']):.2f} per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
