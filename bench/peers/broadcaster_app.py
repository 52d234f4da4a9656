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
                relays[frame["channel"]] = asyncio.create_task(relay(ws, frame["channel"], ready))
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


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)
