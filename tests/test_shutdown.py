"""Graceful shutdown under load: SIGTERM with 1,000 connected clients."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import websockets

from quart_chat.testing import ServerProcess

from .helpers import wait_until

pytestmark = pytest.mark.redis

CLIENTS = int(os.environ.get("QUART_CHAT_SHUTDOWN_CLIENTS", "1000"))


async def connect_all(ws_url: str, count: int) -> list[websockets.ClientConnection]:
    """``count`` clients, each subscribed to one of 20 channels, 100 handshakes at a time."""
    async def one(n: int) -> websockets.ClientConnection:
        ws = await websockets.connect(f"{ws_url}?client_id=c{n}", open_timeout=30,
                                      max_queue=None)
        await ws.recv()  # welcome
        await ws.send(f'{{"type":"subscribe","id":1,"channel":"ch{n % 20}"}}')
        assert '"ok":true' in await ws.recv()
        return ws

    clients: list[websockets.ClientConnection] = []
    for start in range(0, count, 100):
        clients += await asyncio.gather(*(one(n) for n in range(start, min(count, start + 100))))
    return clients


async def close_codes(clients: list[websockets.ClientConnection], wait: float) -> list[int]:
    async def code(ws: websockets.ClientConnection) -> int:
        try:
            async with asyncio.timeout(wait):
                await ws.wait_closed()
        except TimeoutError:
            return -1
        return ws.close_code if ws.close_code is not None else -2

    return list(await asyncio.gather(*(code(ws) for ws in clients)))


def keys(redis_server) -> list[str]:
    return redis_server.cli("--scan", "--pattern", "quart-chat:*").split()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_a_thousand_clients(redis_server, redis_url, workers):
    """All 1,000 get 1001, every Redis record is removed, the server exits 0."""
    env = {"QUART_CHAT_REDIS_URL": redis_url}

    async def scenario(server: ServerProcess) -> tuple[list[int], float, int | None]:
        clients = await connect_all(server.ws_url, CLIENTS)
        wait_until(lambda: len(keys(redis_server)) >= CLIENTS, 20, "records written")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        codes = await close_codes(clients, 10)
        status = await asyncio.to_thread(server.process.wait, 15)  # type: ignore[union-attr]
        return codes, time.monotonic() - started, status

    with ServerProcess(env, "--workers", str(workers)) as server:
        codes, elapsed, status = asyncio.run(scenario(server))
    left = keys(redis_server)
    print(f"\nSIGTERM ({workers} worker(s)): {codes.count(1001)}/{CLIENTS} closed with 1001, "
          f"exit status {status} after {elapsed:.2f}s, {len(left)} Redis keys left")
    assert codes.count(1001) == CLIENTS, sorted(set(codes))
    assert status == 0
    assert left == []
