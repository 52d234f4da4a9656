"""The embedded backend: in-process delivery and records, the default when no Redis URL
is given. Refused with several workers (see Settings): messages would not cross them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from ..config import Settings
from .base import Backend, Deliver, GapNotice


def open(url: str, settings: Settings, node_id: str) -> Backend:
    """The embedded broker and store (``memory://`` or no URL)."""
    return Backend(MemoryBroker(), MemoryStore())


class MemoryBroker:
    """Delivers within this process only."""

    name = "memory"

    def __init__(self) -> None:
        self._channels: set[str] = set()
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, on_gap: GapNotice) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, payload: bytes) -> int:
        if self._deliver is not None and channel in self._channels:
            self._deliver(channel, payload)
            return 1
        return 0

    async def health(self) -> dict[str, Any]:
        return {"connected": self._deliver is not None}


class MemoryStore:
    """Dictionaries of sets; empty entries are removed so nothing stale remains."""

    def __init__(self) -> None:
        self.sessions: dict[str, set[str]] = {}
        self.clients: dict[str, set[str]] = defaultdict(set)
        self.members: dict[str, dict[str, str]] = defaultdict(dict)
        #: claim key -> monotonic expiry
        self.claims: dict[str, float] = {}

    async def connect(self, session_id: str, client_id: str) -> None:
        self.sessions[session_id] = set()
        self.clients[client_id].add(session_id)

    async def join(self, session_id: str, client_id: str, channel: str) -> None:
        self.sessions.setdefault(session_id, set()).add(channel)
        self.members[channel][session_id] = client_id

    async def leave(self, session_id: str, client_id: str, channel: str) -> None:
        self.sessions.get(session_id, set()).discard(channel)
        self._drop_member(channel, session_id)

    async def disconnect(self, session_id: str, client_id: str, channels: Collection[str]) -> None:
        for channel in {*channels, *self.sessions.pop(session_id, ())}:
            self._drop_member(channel, session_id)
        sessions = self.clients.get(client_id)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self.clients[client_id]

    async def presence(self, channel: str) -> list[str]:
        return sorted(set(self.members.get(channel, {}).values()))

    async def reserve(self, session_id: str, client_id: str, limit: int) -> bool:
        sessions = self.clients[client_id]  # no await between the count and the add
        if len(sessions) >= limit:
            if not sessions:
                del self.clients[client_id]
            return False
        sessions.add(session_id)
        return True

    async def claim(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        self.claims = {k: until for k, until in self.claims.items() if until > now}
        if key in self.claims:
            return False
        self.claims[key] = now + ttl
        return True

    def _drop_member(self, channel: str, session_id: str) -> None:
        members = self.members.get(channel)
        if members is not None:
            members.pop(session_id, None)
            if not members:
                del self.members[channel]
