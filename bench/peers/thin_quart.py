"""The thinnest Quart app doing the same fan-out: one pub/sub connection, a bounded queue
and a sender task per socket, nothing else. The yardstick for quart-chat's own overhead.

Run: ``hypercorn -k uvloop bench.peers.thin_quart:app`` (or uvicorn / granian).
"""

from __future__ import annotations

import asyncio
import contextlib

from quart import Quart, websocket

from ._mini import Conn, MiniHub, redis_url, welcome

app = Quart(__name__)
hub = MiniHub(redis_url(), prefix="thin:")


@app.before_serving
async def start() -> None:
    await hub.start()


@app.after_serving
async def stop() -> None:
    await hub.stop()


@app.websocket("/ws")
async def ws() -> None:
    client_id = websocket.args.get("client_id", "anon")
    batch = websocket.args.get("batch", "0") not in ("0", "")
    await websocket.accept()
    conn = Conn(client_id, websocket._get_current_object().send, batch)
    conn.deliver(welcome(client_id, "thin-quart", batch))
    sender = asyncio.create_task(conn.sender())
    try:
        while not conn.closed and not sender.done():
            conn.deliver(await hub.handle(conn, await websocket.receive()))
    finally:
        hub.leave(conn)
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
