"""python-socketio ASGI + AsyncRedisManager: every emit to a room goes through Redis.

Events: ``subscribe {channel}`` (enter the room), ``publish {channel, text}`` (emit
``message`` to the room); both acknowledged. Run: ``uvicorn bench.peers.socketio_app:app``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import socketio

from ._mini import redis_url

manager = socketio.AsyncRedisManager(redis_url(), channel="bench-socketio")
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins="*",
                           ping_interval=25, ping_timeout=60, max_http_buffer_size=2**20)
app = socketio.ASGIApp(sio)


@sio.event
async def connect(sid: str, environ: dict[str, Any]) -> None:
    query = dict(part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&")
                 if "=" in part)
    await sio.save_session(sid, {"client_id": query.get("client_id", "anon")})


@sio.event
async def subscribe(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    await sio.enter_room(sid, data["channel"])
    return {"ok": True}


@sio.event
async def publish(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    session = await sio.get_session(sid)
    ts = time.time()
    mid = f"{int(ts * 1000):012x}{os.urandom(5).hex()}"
    await sio.emit("message", {"type": "message", "channel": data["channel"],
                               "sender": session["client_id"], "text": data["text"],
                               "ts": ts, "mid": mid}, room=data["channel"])
    return {"ok": True, "mid": mid}
