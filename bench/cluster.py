"""Many channels over a 3-shard Redis Cluster versus one Redis, two server processes.

    python bench/cluster.py                       # both backends, about 2 minutes
    python bench/cluster.py --channels 3000 --seconds 20 --backends cluster
    python bench/cluster.py --json bench/results/cluster.json

For each backend it starts (on free loopback ports, stopped by PID afterwards) the Redis
side — one ``redis-server``, or a 3-primary cluster — and two ``quart-chat serve``
processes on it. Every channel has one subscriber on each process, and both subscribers
publish into it, so each message crosses Redis and is delivered twice (once on each
process). Two phases:

- saturation: every client keeps ``--window`` publishes in flight (closed loop); the
  figure is delivered messages per second;
- paced: the same clients publish at a fixed ``--paced`` rate (1,000 publishes/s, so
  2,000 deliveries/s, by default; the same offered load for both backends), for the
  p50/p99 latency at a sane load.

CPU is read from ``/proc/PID/stat`` for every redis-server and server process over each
measured window, in % of one core: on one machine all shards share the same cores, so
look at how the Redis work is split across shards; on many machines each shard gets its
own. Latency is publish-to-delivery, measured by the load generator's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from quart_chat.testing import LocalCluster, RedisServer, ServerProcess

TICKS = os.sysconf("SC_CLK_TCK")


class _Frame(msgspec.Struct):
    type: str = ""
    text: str | None = None
    code: str | None = None


decode_frame = msgspec.json.Decoder(_Frame).decode


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Tally:
    """Deliveries and latencies, switched on for the measured window only."""

    on: bool = False
    delivered: int = 0
    published: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.delivered = self.published = 0
        self.errors = {}
        self.latencies = []


class BenchClient:
    """One WebSocket: subscribed to a slice of channels, publishing into them."""

    def __init__(self, ws: ClientConnection, channels: list[str], tally: Tally) -> None:
        self.ws, self.channels, self.tally = ws, channels, tally
        self.in_flight = 0
        self.room = asyncio.Event()
        self.replies: asyncio.Queue[_Frame] = asyncio.Queue()

    async def read(self) -> None:
        tally = self.tally
        async for raw in self.ws:
            now = time.time()
            for line in (raw if isinstance(raw, str) else raw.decode()).split("\n"):
                frame = decode_frame(line)
                if frame.type == "message":
                    if tally.on:
                        tally.delivered += 1
                        if frame.text:
                            tally.latencies.append(now - float(frame.text))
                elif frame.type == "result":
                    self.in_flight -= 1
                    self.room.set()
                    await self.replies.put(frame)
                elif frame.type == "error":
                    self.in_flight -= 1
                    self.room.set()
                    if tally.on:
                        code = frame.code or "?"
                        tally.errors[code] = tally.errors.get(code, 0) + 1
                    await self.replies.put(frame)

    async def subscribe_all(self) -> None:
        for channel in self.channels:
            await self.ws.send(json.dumps({"type": "subscribe", "channel": channel, "id": 1}))
            reply = await self.replies.get()
            if reply.type != "result":
                raise RuntimeError(f"subscribe {channel} refused")
        while not self.replies.empty():
            self.replies.get_nowait()

    async def publish_loop(self, window: int, rate: float | None, stop: asyncio.Event) -> None:
        """Publish round-robin over the channels: ``window`` in flight, or paced."""
        n = 0
        interval = 1.0 / rate if rate else 0.0
        next_at = time.monotonic()
        while not stop.is_set():
            if rate:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
            while self.in_flight >= window:
                self.room.clear()
                await self.room.wait()
            channel = self.channels[n % len(self.channels)]
            n += 1
            self.in_flight += 1
            if self.tally.on:
                self.tally.published += 1
            await self.ws.send(
                f'{{"type":"publish","id":{n},"channel":"{channel}","text":"{time.time()!r}"}}')
            while not self.replies.empty():
                self.replies.get_nowait()


@contextlib.contextmanager
def backend(kind: str) -> Iterator[tuple[str, dict[str, int]]]:
    """The Redis side: its URL and ``name -> pid`` of every redis-server."""
    if kind == "single":
        with RedisServer() as server:
            assert server.process is not None
            yield server.url, {f"redis:{server.port}": server.process.pid}
    else:
        with LocalCluster(primaries=3) as cluster:
            pids = {f"shard:{n.port}": n.process.pid for n in cluster.nodes if n.process}
            yield cluster.url, pids


ENV = {
    "QUART_CHAT_PUBLISH_RATE": "1000000", "QUART_CHAT_PUBLISH_BURST": "1000000",
    "QUART_CHAT_MAX_CHANNELS_PER_SESSION": "100000", "QUART_CHAT_OUTBOUND_QUEUE": "100000",
    "QUART_CHAT_MAX_BAD_FRAMES": "1000000", "QUART_CHAT_LOG_LEVEL": "warning",
}


async def run_backend(kind: str, args: argparse.Namespace, paced_rate: float
                      ) -> dict[str, Any]:
    channels = [f"bench-{n}" for n in range(args.channels)]
    with backend(kind) as (url, redis_pids):
        procs = [ServerProcess({**ENV, "QUART_CHAT_REDIS_URL": url}) for _ in range(2)]
        try:
            for proc in procs:
                proc.start()
            tally = Tally()
            clients: list[BenchClient] = []
            readers: list[asyncio.Task[None]] = []
            per_client = max(1, len(channels) // args.clients)
            slices = [channels[i:i + per_client] for i in range(0, len(channels), per_client)]
            for proc in procs:
                for i, part in enumerate(slices):
                    ws = await connect(f"{proc.ws_url}?client_id=b{i}&batch=1",
                                       max_size=None, compression=None)
                    client = BenchClient(ws, part, tally)
                    readers.append(asyncio.create_task(client.read()))
                    clients.append(client)
            await asyncio.gather(*(c.subscribe_all() for c in clients))
            pids = {**redis_pids, **{f"server:{p.port}": p.pid for p in procs},
                    "loadgen": os.getpid()}

            async def phase(rate: float | None) -> dict[str, Any]:
                stop = asyncio.Event()
                per_client_rate = rate / len(clients) if rate else None
                loops = [asyncio.create_task(c.publish_loop(args.window, per_client_rate, stop))
                         for c in clients]
                await asyncio.sleep(args.warmup)
                tally.reset()
                tally.on = True
                cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                t0 = time.monotonic()
                await asyncio.sleep(args.seconds)
                tally.on = False
                wall = time.monotonic() - t0
                cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
                stop.set()
                for client in clients:
                    client.room.set()
                await asyncio.gather(*loops, return_exceptions=True)
                await asyncio.sleep(0.5)  # let the last deliveries drain before the next phase
                lat = sorted(tally.latencies) or [0.0]
                return {
                    "offered_publishes_per_s": rate,
                    "publishes_per_s": round(tally.published / wall),
                    "delivered_per_s": round(tally.delivered / wall),
                    "errors": tally.errors,
                    "p50_ms": round(statistics.median(lat) * 1000, 2),
                    "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
                    "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in pids},
                }

            saturation = await phase(None)
            paced = await phase(paced_rate)
            for client in clients:
                await client.ws.close()
            for reader in readers:
                reader.cancel()
            return {"backend": kind, "channels": len(channels), "clients": len(clients),
                    "cores": os.cpu_count(), "load_average": os.getloadavg(),
                    "saturation": saturation, "paced": paced}
        finally:
            for proc in procs:
                proc.stop()


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| backend | phase | publishes/s | delivered/s | p50 ms | p99 ms | errors "
             "| Redis CPU % (per process) | servers CPU % | loadgen CPU % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for name in ("saturation", "paced"):
            p = result[name]
            cpu = p["cpu_percent"]
            redis = " / ".join(f"{v:g}" for k, v in cpu.items() if k.startswith(("redis", "shard")))
            servers = " / ".join(f"{v:g}" for k, v in cpu.items() if k.startswith("server"))
            errors = ", ".join(f"{k} {v}" for k, v in p["errors"].items()) or "0"
            lines.append(f"| {result['backend']} | {name} | {p['publishes_per_s']} | "
                         f"{p['delivered_per_s']} | {p['p50_ms']} | {p['p99_ms']} | "
                         f"{errors} | {redis} | {servers} | {cpu['loadgen']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="single,cluster")
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50, help="WebSockets per process")
    parser.add_argument("--window", type=int, default=8, help="publishes in flight per client")
    parser.add_argument("--paced", type=float, default=1000.0,
                        help="publishes/s offered in the paced phase")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    results: list[dict[str, Any]] = []
    for kind in args.backends.split(","):
        result = asyncio.run(run_backend(kind, args, args.paced))
        results.append(result)
        print(f"{kind}: {json.dumps(result)}", file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
