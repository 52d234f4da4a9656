"""Profile one server under a steady fan-out load with py-spy.

``python -m bench.profile quart-chat/hypercorn --rate 60 --seconds 8`` starts the server
(and a private Redis), connects 500 subscribers, publishes ``rate``/s for ``seconds``
while ``py-spy record`` samples the server, then prints the functions with the most
samples (inclusive and self) and the server CPU time per delivered message.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from quart_chat.testing import RedisServer

from .loadgen import ADAPTERS, LoadGen
from .servers import SPECS, RunningServer


def summarize(collapsed: pathlib.Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples", "", "self:"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


async def main(args: argparse.Namespace) -> None:
    spec = SPECS[args.server]
    with RedisServer() as redis:
        srv = RunningServer(spec, redis.url, cpu=0 if os.cpu_count() and os.cpu_count() > 1
                            else None).start()
        try:
            lg = LoadGen(srv.base_url, ADAPTERS[spec.adapter](), srv.cpu_seconds)
            clients = await lg.connect(args.subscribers, lambda i: "fan")
            await asyncio.sleep(0.3)
            out = pathlib.Path(tempfile.mkdtemp(prefix="bench-profile-")) / "stacks.txt"
            spy = None
            if not args.no_spy and shutil.which("py-spy"):
                spy = subprocess.Popen(  # noqa: ASYNC220 (starts it and returns)
                    ["py-spy", "record", "--pid", str(srv.process.pid),
                                        "--format", "raw", "--rate", "250", "--nonblocking",
                                        "--duration", str(int(args.seconds)), "-o", str(out)],
                                       stdout=subprocess.DEVNULL)
            r = await lg.step([(c, "fan") for c in clients[:10]], args.rate, args.seconds,
                              len(clients))
            print(f"delivered {r.delivered_rate:,.0f}/s p50 {r.p50 * 1e3:.1f}ms "
                  f"p99 {r.p99 * 1e3:.1f}ms loss {r.loss} server CPU "
                  f"{1e6 * r.server_cpu / max(r.received, 1):.2f} us/delivery "
                  f"({r.server_cpu / r.seconds:.0%} of a core), loadgen {r.client_cpu:.0%}, "
                  f"{r.received / max(r.frames, 1):.2f} messages per frame")
            if spy is not None:
                spy.wait(60)
                if out.exists():
                    print(summarize(out, args.top))
            await lg.close_all()
        finally:
            srv.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("server", choices=sorted(SPECS))
    parser.add_argument("--rate", type=float, default=40.0, help="publishes/s")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-spy", action="store_true")
    import uvloop

    uvloop.run(main(parser.parse_args(sys.argv[1:])))
