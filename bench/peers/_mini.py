"""The smallest correct fan-out over one Redis pub/sub connection, shared by the floor
and the thin Quart app: one pub/sub connection per process, encode once, a bounded queue
and one sender task per socket. Speaks the subset of protocol v1 the load generator uses.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

QUEUE = 1024
MAX_BATCH = 256
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Conn:
    """One socket: a bounded outbound queue drained by one sender task."""

    __slots__ = ("batch", "channels", "client_id", "closed", "queue", "send")

    def __init__(self, client_id: str, send: Callable[[str], Awaitable[Any]], batch: bool):
        self.client_id = client_id
        self.send = send
        self.batch = batch
        self.channels: set[str] = set()
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE)
        self.closed = False

    def deliver(self, frame: str) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.closed = True  # slow consumer: the sender loop ends and the socket closes

    async def sender(self) -> None:
        get, send, queue = self.queue.get, self.send, self.queue
        while not self.closed:
            frame = await get()
            if self.batch and queue.qsize():
                frames = [frame]
                while queue.qsize() and len(frames) < MAX_BATCH:
                    frames.append(queue.get_nowait())
                frame = "\n".join(frames)
            await send(frame)


class MiniHub:
    def __init__(self, url: str, prefix: str = "mini:") -> None:
        self.url = url
        self.prefix = prefix
        self.members: dict[str, set[Conn]] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.redis = aioredis.Redis.from_url(self.url)
        self.pubsub = self.redis.pubsub()
        # Subscribe a private channel first so the listener always has a subscription.
        await self.pubsub.subscribe(f"{self.prefix}_probe_{os.getpid()}")
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        self._task.cancel()
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def _listen(self) -> None:
        skip = len(self.prefix)
        members = self.members
        get = self.pubsub.get_message
        while True:
            message = await get(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            conns = members.get(message["channel"][skip:].decode())
            if conns:
                frame = message["data"].decode()
                for conn in tuple(conns):
                    conn.deliver(frame)

    async def handle(self, conn: Conn, data: str | bytes) -> str:
        """Handle one inbound frame; the result frame to send back."""
        frame = _decode(data)
        kind, rid = frame.get("type"), frame.get("id")
        if kind == "subscribe":
            channel = frame["channel"]
            async with self._lock:
                if channel not in self.members:
                    await self.pubsub.subscribe(self.prefix + channel)
                    self.members[channel] = set()
            self.members[channel].add(conn)
            conn.channels.add(channel)
            return _encode({"type": "result", "id": rid, "ok": True}).decode()
        if kind == "publish":
            channel = frame["channel"]
            if channel not in conn.channels:
                return _encode({"type": "error", "id": rid, "code": "not_subscribed",
                                "message": "subscribe first"}).decode()
            ts = time.time()
            mid = f"{int(ts * 1000):012x}{os.urandom(5).hex()}"
            await self.redis.publish(self.prefix + channel, _encode(
                {"type": "message", "channel": channel, "sender": conn.client_id,
                 "text": frame["text"], "ts": ts, "mid": mid}))
            return _encode({"type": "result", "id": rid, "ok": True, "mid": mid}).decode()
        return _encode({"type": "error", "id": rid, "code": "unknown_type",
                        "message": str(kind)}).decode()

    def leave(self, conn: Conn) -> None:
        for channel in conn.channels:
            members = self.members.get(channel)
            if members is not None:
                members.discard(conn)
        conn.channels.clear()


def welcome(client_id: str, server: str, batch: bool) -> str:
    return _encode({"type": "welcome", "client_id": client_id, "session": os.urandom(8).hex(),
                    "server": server, "protocol": 1, "batch": batch}).decode()


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
