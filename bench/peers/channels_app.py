"""Django Channels + channels_redis (``RedisPubSubChannelLayer``), one consumer per socket.

Same JSON protocol as quart-chat. Run: ``uvicorn bench.peers.channels_app:application``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import django
from django.conf import settings

from ._mini import redis_url, welcome

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    ROOT_URLCONF=__name__,
    CHANNEL_LAYERS={"default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [redis_url()], "prefix": "bench-channels"},
    }},
)
django.setup()

import msgspec  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

urlpatterns: list[Any] = []
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        query = dict(part.split("=", 1) for part in
                     self.scope.get("query_string", b"").decode().split("&") if "=" in part)
        self.client_id = query.get("client_id", "anon")
        self.rooms: set[str] = set()
        await self.accept()
        await self.send(text_data=welcome(self.client_id, "channels", False))

    async def disconnect(self, code: int) -> None:
        for room in self.rooms:
            await self.channel_layer.group_discard(room, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = _decode(text_data or b"{}")
        kind, rid = frame.get("type"), frame.get("id")
        if kind == "subscribe":
            await self.channel_layer.group_add(frame["channel"], self.channel_name)
            self.rooms.add(frame["channel"])
            await self.send(text_data=_encode({"type": "result", "id": rid, "ok": True}).decode())
        elif kind == "publish":
            ts = time.time()
            mid = f"{int(ts * 1000):012x}{os.urandom(5).hex()}"
            payload = _encode({"type": "message", "channel": frame["channel"],
                               "sender": self.client_id, "text": frame["text"], "ts": ts,
                               "mid": mid}).decode()
            await self.channel_layer.group_send(frame["channel"],
                                                {"type": "chat.message", "payload": payload})
            await self.send(
                text_data=_encode({"type": "result", "id": rid, "ok": True, "mid": mid}).decode())

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["payload"])


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("ws", ChatConsumer.as_asgi())]),
})
