"""Functions (issue 15), two ``quart-chat serve`` processes on one private redis-server:

- ``calls``: calls per second answered by a trivial ``call`` function (echo), from
  ``--clients`` clients per process, each with ``--window`` calls in flight;
- ``leaves``: seconds from SIGKILL of one process to its sessions' ``leave`` frames at a
  subscriber on the other (the survivor's node heartbeat reaps it), for ``--node-ttl``.

    python bench/functions.py calls
    python bench/functions.py leaves --node-ttl 15
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
import time
from pathlib import Path

import websocket

from quart_chat.testing import RedisServer, ServerProcess

ECHO = ("from quart_chat import hookimpl\n\n@hookimpl\ndef call(method, params):\n"
        "    return params if method == 'echo' else None\n")


def _open(ws_url: str, name: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"{ws_url}?client_id={name}", timeout=60)
    ws.recv()  # welcome
    return ws


def _caller(ws_url: str, name: str, calls: int, window: int, done: list[int]) -> None:
    ws = _open(ws_url, name)
    sent = 0
    while sent < calls:
        batch = min(window, calls - sent)
        for n in range(sent, sent + batch):
            ws.send(json.dumps({"type": "call", "method": "echo", "params": {"n": n}, "id": n}))
        for _ in range(batch):
            assert json.loads(ws.recv())["type"] == "result"
        sent += batch
    done.append(sent)
    ws.close()


def calls(args: argparse.Namespace, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "echo.py").write_text(ECHO)
        env = {**env, "QUART_CHAT_PLUGINS_DIR": folder, "QUART_CHAT_FRAME_RATE": "1000000"}
        with ServerProcess(env) as one, ServerProcess(env) as two:
            done: list[int] = []
            threads = [threading.Thread(target=_caller, args=(proc.ws_url, f"c{p}{c}",
                                                              args.calls, args.window, done))
                       for p, proc in enumerate((one, two)) for c in range(args.clients)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            wall = time.perf_counter() - start
    print(f"{sum(done)} calls, {len(done)} clients, 2 processes: {wall:.2f}s, "
          f"{sum(done) / wall:.0f} calls/s")


def leaves(args: argparse.Namespace, env: dict[str, str]) -> None:
    env = {**env, "QUART_CHAT_NODE_TTL": str(args.node_ttl)}
    with ServerProcess(env) as one, ServerProcess(env) as doomed:
        alice = _open(one.ws_url, "alice")
        alice.send(json.dumps({"type": "subscribe", "channel": "lobby", "id": 1}))
        victims = [_open(doomed.ws_url, f"u{n}") for n in range(args.clients)]
        for ws in victims:
            ws.send(json.dumps({"type": "subscribe", "channel": "lobby", "id": 1}))
        joins = 0
        while joins < len(victims) + 1:
            joins += json.loads(alice.recv())["type"] == "join"
        time.sleep(1)  # a heartbeat has listed them all
        doomed.stop(signal.SIGKILL)
        killed, left = time.monotonic(), 0
        while left < len(victims):
            left += json.loads(alice.recv())["type"] == "leave"
        took = time.monotonic() - killed
        for ws in (alice, *victims):
            ws.close()
    print(f"node_ttl {args.node_ttl}s: {left} leave frames {took:.2f}s after SIGKILL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["calls", "leaves"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--node-ttl", type=float, default=2.0)
    args = parser.parse_args()
    with RedisServer() as redis:
        env = {"QUART_CHAT_REDIS_URL": redis.url, "QUART_CHAT_JOIN_LEAVE": "true",
               "QUART_CHAT_LOG_LEVEL": "warning"}
        {"calls": calls, "leaves": leaves}[args.what](args, env)


if __name__ == "__main__":
    main()
