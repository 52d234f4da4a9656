"""The scenarios, run server by server on one private redis-server.

(a) fanout     500 subscribers of one channel; the publish rate rises until p99 > 250 ms
               or a delivery is lost; the best delivered rate that held is reported.
(b) light      100 subscribers, 20 publishes/s: end-to-end p50/p99.
(c) rooms      1,000 clients in 500 rooms of two, each publishing once a second.
(d) memory     RSS growth of the server per idle connection, each subscribed to its own
               channel (2,000 clients, then 10,000).
(e) handshake  WebSocket handshakes + subscribes accepted per second.
(g) storm      a reconnect storm: N clients (2,000, then 10,000) connect and subscribe, each
               to its own channel, all at once: time until all are subscribed, failures.
(f) scale      quart-chat with one process versus two on one Redis: server CPU time per
               delivered message at the same offered load.

The server is pinned to CPU 0 and the load generator (this process) and Redis to CPU 1
when the machine has two CPUs, except in (f), where both server processes need a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from quart_chat.testing import RedisServer

from .loadgen import ADAPTERS, LoadGen, StepResult, Timing
from .servers import SPECS, RunningServer, ServerSpec

P99_LIMIT = 0.25
SCENARIOS = ("handshake", "storm", "memory", "light", "fanout", "rooms", "scale")
#: Scenarios where write coalescing changes nothing worth a separate run.
PLAIN_ONLY = {"handshake", "storm", "memory", "rooms"}
#: Longest a storm may take before the clients still pending count as failures.
STORM_DEADLINE = 120.0


class Progress:
    """One line per event on stderr, with the elapsed time of the whole run."""

    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.monotonic()
        self.quiet = quiet

    def __call__(self, text: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.t0
            print(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {text}", file=sys.stderr,
                  flush=True)


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f}ms"


def _step_line(name: str, r: StepResult) -> str:
    status = "ok" if r.clean else f"LOSS {r.loss} err {r.errors} closed {r.disconnected}"
    if r.refused:
        status += f" refused {r.refused} ({r.refusals[0][:80] if r.refusals else ''})"
    return (f"{name:28s} offered {r.offered * (r.expected / max(r.published, 1)):>9,.0f}/s "
            f"delivered {r.delivered_rate:>9,.0f}/s p50 {_ms(r.p50):>8s} p99 {_ms(r.p99):>8s} "
            f"server cpu {r.server_cpu / r.seconds:4.0%} loadgen cpu {r.client_cpu:4.0%} "
            f"docs/frame {r.received / max(r.frames, 1):.1f} {status}")


class Bench:
    def __init__(self, timing: Timing, progress: Progress, *, pin: bool = True) -> None:
        self.timing = timing
        self.progress = progress
        self.pin = pin and len(os.sched_getaffinity(0)) >= 2
        self.redis: RedisServer | None = None

    # -- plumbing ---------------------------------------------------------------------
    def start_redis(self) -> None:
        self.redis = RedisServer().start()
        if self.pin and self.redis.process is not None:
            os.sched_setaffinity(self.redis.process.pid, {1})
        if self.pin:
            os.sched_setaffinity(0, {1})

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()

    def server(self, spec: ServerSpec, *, workers: int = 1, pinned: bool = True) -> RunningServer:
        assert self.redis is not None
        self.redis.cli("FLUSHALL")
        return RunningServer(spec, self.redis.url, cpu=0 if (self.pin and pinned) else None,
                             workers=workers).start()

    # -- scenarios --------------------------------------------------------------------
    async def fanout(self, spec: ServerSpec, srv: RunningServer, lg: LoadGen) -> dict[str, Any]:
        t = self.timing
        clients = await lg.connect(t.fanout_subscribers, lambda i: "fan")
        await asyncio.sleep(0.2)
        # Several publishers: a server handles one connection's frames in order, so a
        # single publisher's round trip to Redis, queued behind the fan-out work, would
        # cap the publish rate long before the fan-out does.
        publisher = [(c, "fan") for c in clients[: t.fanout_publishers]]
        rate = t.fanout_start
        steps: list[StepResult] = []
        best: StepResult | None = None
        retried = False
        for _ in range(t.fanout_max_steps):
            r = await lg.step(publisher, rate, t.step_seconds, len(clients))
            steps.append(r)
            self.progress(_step_line(spec.name, r))
            held = r.clean and r.p99 <= P99_LIMIT
            if not held and r.clean and not retried:
                # Latency alone failed: on a shared machine a stall elsewhere can do that.
                # Try the same rate once more before calling it the limit.
                retried = True
                continue
            if not held:
                break
            if best is None or r.delivered_rate > best.delivered_rate:
                best = r
            # Far from the limit, rise by 50%; near it (server busy or latency building),
            # by 25%, so the answer is within 25% of the true limit.
            busy = r.server_cpu / r.seconds > 0.45 or r.p99 > 0.02
            rate *= 1.25 if busy else 1.5
        clean = [s for s in steps if s.clean and s.received]
        return {
            # Server CPU per delivery over every step without loss, latency aside: the
            # figure least disturbed by other load on the machine.
            "cpu_us": (1e6 * sum(s.server_cpu for s in clean) / sum(s.received for s in clean)
                       if clean else float("nan")),
            "best_rate": best.delivered_rate if best else 0.0,
            "best_p99": best.p99 if best else float("nan"),
            "best_client_cpu": best.client_cpu if best else float("nan"),
            "best_server_cpu_us": (1e6 * best.server_cpu / best.received) if best else float("nan"),
            "stopped_by": ("max steps" if steps and steps[-1].clean and steps[-1].p99 <= P99_LIMIT
                           else "loss" if steps and not steps[-1].clean else "p99"),
            "steps": [asdict(s) | {"loss": s.loss} for s in steps],
        }

    async def light(self, spec: ServerSpec, srv: RunningServer, lg: LoadGen) -> dict[str, Any]:
        t = self.timing
        clients = await lg.connect(t.light_subscribers, lambda i: "light")
        await asyncio.sleep(0.2)
        # Three short runs and the median of each figure: one stall caused elsewhere on a
        # shared machine moves one run's p99, not the median.
        runs = []
        for _ in range(3):
            r = await lg.step([(clients[0], "light")], 20.0, t.light_seconds / 3, len(clients))
            self.progress(_step_line(spec.name, r))
            runs.append(r)
        p50s = sorted(r.p50 for r in runs)
        p99s = sorted(r.p99 for r in runs)
        return {"p50": p50s[1], "p99": p99s[1], "p99_runs": p99s,
                "max": max(r.max for r in runs), "loss": sum(r.loss for r in runs),
                "errors": sum(r.errors for r in runs),
                "delivered": sum(r.received for r in runs), "step": asdict(runs[-1])}

    async def rooms(self, spec: ServerSpec, srv: RunningServer, lg: LoadGen) -> dict[str, Any]:
        t = self.timing
        n = t.rooms_clients - t.rooms_clients % 2
        clients = await lg.connect(n, lambda i: f"room-{i // 2}")
        await asyncio.sleep(0.2)
        # lg.connect keeps order, so clients[i] is in room i // 2.
        publishers = [(c, f"room-{i // 2}") for i, c in enumerate(clients)]
        r = await lg.step(publishers, float(n), t.rooms_seconds, 2)
        self.progress(_step_line(spec.name, r))
        return {"p50": r.p50, "p99": r.p99, "loss": r.loss, "errors": r.errors,
                "delivered_rate": r.delivered_rate,
                "server_cpu_us": 1e6 * r.server_cpu / max(r.received, 1), "step": asdict(r)}

    async def memory(self, spec: ServerSpec, srv: RunningServer, lg: LoadGen) -> dict[str, Any]:
        """RSS growth per idle connection, each subscribed to its own channel, measured
        at each count of ``memory_clients`` (the clients of one count stay open)."""
        t = self.timing
        await lg.connect(20, lambda i: f"warm-{i}")  # warm-up: imports, first-use caches
        await asyncio.sleep(0.5)
        rss0 = srv.rss()
        out: dict[str, Any] = {"rss_before": rss0}
        opened = 0
        for n in t.memory_clients:
            await lg.connect(n - opened, lambda i, base=opened: f"idle-{base + i}")
            opened = n
            await asyncio.sleep(1.0)
            rss = srv.rss()
            per = (rss - rss0) / n
            self.progress(f"{spec.name:28s} memory: {per / 1024:.1f} KiB per idle subscribed "
                          f"connection ({n} clients, RSS {rss0 >> 20} -> {rss >> 20} MiB)")
            out[str(n)] = {"per_conn": per, "rss_after": rss}
        first = str(t.memory_clients[0])
        return {**out, "per_conn": out[first]["per_conn"], "clients": t.memory_clients[0]}

    async def handshake(self, spec: ServerSpec, srv: RunningServer,
                        lg: LoadGen) -> dict[str, Any]:
        n = self.timing.handshake_clients
        t0 = time.monotonic()
        scpu0 = srv.cpu_seconds()
        await lg.connect(n, lambda i: "hs", concurrency=64)
        wall = time.monotonic() - t0
        rate = n / wall
        self.progress(f"{spec.name:28s} handshake+subscribe: {rate:,.0f}/s ({n} clients in "
                      f"{wall:.2f}s, server cpu {(srv.cpu_seconds() - scpu0) / wall:.0%})")
        return {"rate": rate, "clients": n, "seconds": wall}

    async def storm(self, spec: ServerSpec, srv: RunningServer, lg: LoadGen) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in self.timing.storm_clients:
            t0 = time.monotonic()
            scpu0 = srv.cpu_seconds()
            clients, failures = await lg.storm(n, lambda i: f"storm-{i}",
                                               deadline=STORM_DEADLINE)
            wall = time.monotonic() - t0
            rate = len(clients) / wall
            self.progress(f"{spec.name:28s} storm of {n}: {len(clients)} subscribed in "
                          f"{wall:.2f}s ({rate:,.0f}/s), {len(failures)} failed"
                          + (f" ({failures[0]})" if failures else "")
                          + f", server cpu {srv.cpu_seconds() - scpu0:.1f}s")
            out[str(n)] = {"clients": n, "subscribed": len(clients), "seconds": wall,
                           "rate": rate, "failures": len(failures), "first_failures":
                           sorted(set(failures))[:3], "server_cpu": srv.cpu_seconds() - scpu0}
            await lg.close_all()
            await _settle(srv)
        return out

    async def run_scenario(self, name: str, spec: ServerSpec) -> dict[str, Any]:
        runner: Callable[..., Any] = getattr(self, name)
        srv = self.server(spec)
        lg = LoadGen(srv.base_url, ADAPTERS[spec.adapter](), srv.cpu_seconds)
        try:
            return dict(await runner(spec, srv, lg))
        finally:
            await lg.close_all()
            srv.stop()

    async def scale(self, spec: ServerSpec) -> dict[str, Any]:
        """One process versus two, same offered load, server and load generator unpinned."""
        t = self.timing
        out: dict[str, Any] = {"server": spec.name}
        if self.pin:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
        rate = t.extra.get("scale_rate", 100.0)
        try:
            for workers in (1, 2):
                srv = self.server(spec, workers=workers, pinned=False)
                lg = LoadGen(srv.base_url, ADAPTERS[spec.adapter](), srv.cpu_seconds)
                try:
                    clients = await lg.connect(t.fanout_subscribers, lambda i: "fan")
                    await asyncio.sleep(0.5)
                    split0 = srv.cpu_split()
                    r = await lg.step([(c, "fan") for c in clients[: t.fanout_publishers]],
                                      rate, t.scale_seconds, len(clients))
                    split1 = srv.cpu_split()
                    split = [b - a for a, b in zip(split0, split1, strict=False)]
                    self.progress(_step_line(f"{spec.name} x{workers}", r))
                    out[f"w{workers}"] = {
                        "delivered_rate": r.delivered_rate, "p50": r.p50, "p99": r.p99,
                        "loss": r.loss, "server_cpu": r.server_cpu,
                        "cpu_us_per_msg": 1e6 * r.server_cpu / max(r.received, 1),
                        "cpu_split": split, "client_cpu": r.client_cpu,
                    }
                finally:
                    await lg.close_all()
                    srv.stop()
        finally:
            if self.pin:
                os.sched_setaffinity(0, {1})
        w1, w2 = out["w1"]["cpu_us_per_msg"], out["w2"]["cpu_us_per_msg"]
        out["efficiency_ratio"] = w2 / w1 if w1 else float("nan")
        return out


async def _settle(srv: RunningServer, limit: float = 30.0) -> None:
    """Wait (at most ``limit`` s) until the server is idle again: the sessions closed
    by one storm are cleaned up before the next storm starts."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        before = srv.cpu_seconds()
        await asyncio.sleep(0.5)
        if srv.cpu_seconds() - before < 0.05:
            return


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard one (the servers it
    starts inherit it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def run(specs: list[str], scenarios: list[str], timing: Timing, progress: Progress,
              *, time_limit: float = 1100.0, pin: bool = True) -> dict[str, Any]:
    """Run ``scenarios`` against ``specs``; skip what would start after ``time_limit`` s."""
    bench = Bench(timing, progress, pin=pin)
    files = raise_file_limit()
    if "storm" in scenarios and max(timing.storm_clients) + 1000 > files:
        # Each client is a file in this process and one in the server's.
        timing.storm_clients = tuple(n for n in timing.storm_clients if n + 1000 <= files)
        progress(f"open-file limit {files}: storms of {timing.storm_clients or 'none'} only")
    results: dict[str, Any] = {
        "meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                 "cpus": os.cpu_count(), "pinned": bench.pin, "python": sys.version.split()[0],
                 "timing": asdict(timing), "argv": sys.argv[1:]},
        "servers": {},
        "skipped": [],
    }
    t0 = time.monotonic()
    bench.start_redis()
    try:
        plan: list[tuple[str, int]] = []
        for scenario in [s for s in scenarios if s != "scale"]:
            rounds = timing.extra.get("fanout_rounds", 1) if scenario == "fanout" else 1
            plan += [(scenario, r) for r in range(rounds)]
        for scenario, round_ in plan:
            for name in specs:
                spec = SPECS[name]
                if scenario in PLAIN_ONLY and spec.adapter == "json-batch":
                    continue
                if time.monotonic() - t0 > time_limit:
                    results["skipped"].append(f"{scenario}:{name} (time limit)")
                    continue
                progress(f"-- {scenario}: {name}" + (f" (round {round_ + 1})" if round_ else ""))
                try:
                    out = await bench.run_scenario(scenario, spec)
                except Exception as exc:  # a peer that fails is reported, not fatal
                    progress(f"{name}: {scenario} failed: {type(exc).__name__}: {exc}")
                    out = {"failed": f"{type(exc).__name__}: {exc}"}
                mine = results["servers"].setdefault(name, {})
                if scenario == "fanout":
                    # Rounds run every server in turn; keep each server's best round, so a
                    # burst of load from elsewhere on a shared machine does not decide it.
                    rates = mine.setdefault("fanout_rounds", [])
                    rates.append(out.get("best_rate", 0.0))
                    previous = mine.get("fanout")
                    if previous is not None and previous.get("best_rate", 0.0) >= out.get(
                            "best_rate", 0.0):
                        continue
                mine[scenario] = out
        if "scale" in scenarios:
            name = timing.extra.get("scale_server", "quart-chat/hypercorn+batch")
            if time.monotonic() - t0 > time_limit:
                results["skipped"].append("scale (time limit)")
            else:
                progress(f"-- scale: {name}, 1 process vs 2")
                try:
                    results["scale"] = await bench.scale(SPECS[name])
                except Exception as exc:
                    progress(f"scale failed: {type(exc).__name__}: {exc}")
                    results["scale"] = {"failed": f"{type(exc).__name__}: {exc}"}
    finally:
        bench.stop_redis()
    results["meta"]["seconds"] = round(time.monotonic() - t0, 1)
    return results
