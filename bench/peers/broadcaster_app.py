"""encode/broadcaster + Starlette, the library's own chat pattern: one task per
subscription iterating ``broadcast.subscribe(channel)`` and sending each event.

Same JSON protocol as quart-chat. Run: ``uvicorn bench.peers.broadcaster_app:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import msgspec
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from ._mini import redis_url, welcome

broadcast = Broadcast(redis_url())
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
PREFIX = "bc:"
# broadcaster 0.3.1 races when two sockets subscribe to a new channel at once (both see
# no subscribers, both subscribe, the second replaces the first's queue, whose socket
# then gets nothing): the app serialises subscribes, as a careful user would.
_subscribing = asyncio.Lock()


async def relay(ws: WebSocket, channel: str, ready: asyncio.Event) -> None:
    async with broadcast.subscribe(PREFIX + channel) as subscriber:
        ready.set()
        async for event in subscriber:  # type: ignore[union-attr]
            await ws.send_text(event.message)


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    client_id = ws.query_params.get("client_id", "anon")
    await ws.send_text(welcome(client_id, "broadcaster", False))
    relays: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            frame = _decode(await ws.receive_text())
            kind, rid = frame.get("type"), frame.get("id")
            if kind == "subscribe":
                ready = asyncio.Event()
                async with _subscribing:
                    relays[frame["channel"]] = asyncio.create_task(
                        relay(ws, frame["channel"], ready))
                    await ready.wait()
                await ws.send_text(_encode({"type": "result", "id": rid, "ok": True}).decode())
            elif kind == "publish":
                ts = time.time()
                mid = f"{int(ts * 1000):012x}{os.urandom(5).hex()}"
                await broadcast.publish(PREFIX + frame["channel"], _encode(
                    {"type": "message", "channel": frame["channel"], "sender": client_id,
                     "text": frame["text"], "ts": ts, "mid": mid}).decode())
                await ws.send_text(
                    _encode({"type": "result", "id": rid, "ok": True, "mid": mid}).decode())
    except Exception:
        pass
    finally:
        for task in relays.values():
            task.cancel()
        for task in relays.values():
            with contextlib.suppress(BaseException):
                await task


async def _keep_listener_alive(ready: asyncio.Event) -> None:
    """Work around a race in broadcaster 0.3.1's RedisBackend: it wakes its listener
    *before* SUBSCRIBE completes, so ``pubsub.listen()`` sees no subscription, returns,
    and the listener sleeps until the next *new* channel; every message on the first
    channel is lost. Holding one subscription and waking the listener once it is
    confirmed keeps it running."""
    async with broadcast.subscribe(PREFIX + "_keepalive"):
        await asyncio.sleep(0.2)
        broadcast._backend._ready.set()  # type: ignore[attr-defined]
        ready.set()
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    ready = asyncio.Event()
    keeper = asyncio.create_task(_keep_listener_alive(ready))
    await ready.wait()
    yield
    keeper.cancel()
    await broadcast.disconnect()


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)
