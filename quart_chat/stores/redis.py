"""The subscription record in Redis, under the configured key prefix.

Key layout (``P`` is the prefix):

- ``P:session:<session_id>`` SET of channels the session is subscribed to
- ``P:client:<client_id>``   SET of the client's live session ids
- ``P:presence:<channel>``   HASH session_id -> client_id (who is in the channel)
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from typing import TypeVar

import redis.asyncio as aioredis

from ..brokers.redis import REDIS_DOWN
from ..errors import Unavailable

T = TypeVar("T")


class RedisStore:
    """Records kept in Redis so every process (and operators) can see them."""

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._redis = client
        #: The command client, shared with the node heartbeat (quart_chat.presence).
        self.redis = client
        self._prefix = prefix

    def session_key(self, session_id: str, client_id: str) -> str:
        return f"{self._prefix}:session:{session_id}"

    def client_key(self, client_id: str) -> str:
        return f"{self._prefix}:client:{client_id}"

    def presence_key(self, channel: str) -> str:
        return f"{self._prefix}:presence:{channel}"

    async def connect(self, session_id: str, client_id: str) -> None:
        await self._run(self._redis.sadd(self.client_key(client_id), session_id))

    async def join(self, session_id: str, client_id: str, channel: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.sadd(self.session_key(session_id, client_id), channel)
        pipe.hset(self.presence_key(channel), session_id, client_id)
        await self._run(pipe.execute())

    async def leave(self, session_id: str, client_id: str, channel: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.srem(self.session_key(session_id, client_id), channel)
        pipe.hdel(self.presence_key(channel), session_id)
        await self._run(pipe.execute())

    async def disconnect(self, session_id: str, client_id: str, channels: Collection[str]) -> None:
        await self.disconnect_many([(session_id, client_id, channels)])

    async def disconnect_many(
        self, sessions: Collection[tuple[str, str, Collection[str]]]
    ) -> dict[str, set[str]]:
        """Forget many sessions in two round trips (shutdown, sweeps, reaping dead nodes).

        Each entry is (session id, client id, channels known to be subscribed); the
        channels recorded in Redis are removed too, and returned per session id.
        """
        if not sessions:
            return {}
        reads = self._redis.pipeline(transaction=False)
        for session_id, client_id, _ in sessions:
            reads.smembers(self.session_key(session_id, client_id))
        recorded = await self._run(reads.execute())
        found: dict[str, set[str]] = {}
        pipe = self._redis.pipeline(transaction=False)
        for (session_id, client_id, channels), members in zip(sessions, recorded, strict=True):
            found[session_id] = {_text(c) for c in members}
            for channel in {*channels, *found[session_id]}:
                pipe.hdel(self.presence_key(channel), session_id)
            pipe.delete(self.session_key(session_id, client_id))
            pipe.srem(self.client_key(client_id), session_id)
        await self._run(pipe.execute())
        return found

    async def presence(self, channel: str) -> list[str]:
        members = await self._run(self._redis.hvals(self.presence_key(channel)))
        return sorted({_text(m) for m in members})

    async def session_count(self, client_id: str) -> int:
        return int(await self._run(self._redis.scard(self.client_key(client_id))))

    async def client_channels(self, client_id: str) -> list[str]:
        sessions = await self._run(self._redis.smembers(self.client_key(client_id)))
        if not sessions:
            return []
        keys = [self.session_key(_text(s), client_id) for s in sessions]
        channels = await self._run(self._redis.sunion(keys))
        return sorted(_text(c) for c in channels)

    @staticmethod
    async def _run(awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except REDIS_DOWN as exc:
            raise Unavailable("the subscription store (Redis) is unreachable") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
