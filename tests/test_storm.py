"""A reconnect storm: a thousand clients connecting and subscribing at the same moment
(what a deploy or a network blip causes) are all admitted and subscribed, none refused."""

from __future__ import annotations

import asyncio
import os

import pytest
import websockets

from quart_chat.testing import ServerProcess

pytestmark = pytest.mark.redis

CLIENTS = int(os.environ.get("QUART_CHAT_STORM_CLIENTS", "1000"))
#: Bounds the whole storm; a hang (a subscribe that never answers) fails the test.
STORM_SECONDS = 90.0


async def storm(ws_url: str, count: int) -> tuple[list[websockets.ClientConnection], list[str]]:
    """Open ``count`` clients at once, each subscribing to its own channel; the open
    clients and the failures (refusals, closes, timeouts), in words."""
    async def one(n: int) -> websockets.ClientConnection:
        ws = await websockets.connect(f"{ws_url}?client_id=s{n}", open_timeout=60,
                                      max_queue=None)
        await ws.recv()  # welcome
        await ws.send(f'{{"type":"subscribe","id":1,"channel":"storm-{n}"}}')
        answer = await ws.recv()
        if '"ok":true' not in str(answer):
            await ws.close()
            raise RuntimeError(f"subscribe refused: {answer!s:.200}")
        return ws

    async with asyncio.timeout(STORM_SECONDS):
        results = await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True)
    clients = [r for r in results if isinstance(r, websockets.ClientConnection)]
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return clients, failures


def test_a_thousand_clients_at_once_are_all_subscribed(redis_server, redis_url):
    """No ``unavailable``, no hang: every client subscribed, every channel live in Redis
    and recorded, and a message published to the last one arrives."""
    async def scenario(server: ServerProcess) -> None:
        clients, failures = await storm(server.ws_url, CLIENTS)
        try:
            assert failures == [], f"{len(failures)} of {CLIENTS} failed: {failures[:3]}"
            channels = redis_server.cli("PUBSUB", "CHANNELS", "quart-chat:ch:storm-*").split()
            assert len(channels) == CLIENTS
            presence = redis_server.cli("--scan", "--pattern",
                                        "quart-chat:presence:storm-*").split()
            assert len(presence) == CLIENTS
            last = clients[-1]
            await last.send(f'{{"type":"publish","id":2,"channel":"storm-{CLIENTS - 1}",'
                            '"text":"after the storm"}')
            async with asyncio.timeout(10):
                frames = [await last.recv() for _ in range(2)]
            assert any("after the storm" in str(frame) for frame in frames)
        finally:
            await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)

    server = ServerProcess({"QUART_CHAT_REDIS_URL": redis_url}).start()
    try:
        asyncio.run(scenario(server))
    finally:
        server.stop()
