"""The in-process subscription record, used with the embedded broker."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection


class MemoryStore:
    """Dictionaries of sets; empty entries are removed so nothing stale remains."""

    def __init__(self) -> None:
        self.sessions: dict[str, set[str]] = {}
        self.clients: dict[str, set[str]] = defaultdict(set)
        self.members: dict[str, dict[str, str]] = defaultdict(dict)

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

    async def session_count(self, client_id: str) -> int:
        return len(self.clients.get(client_id, ()))

    async def client_channels(self, client_id: str) -> list[str]:
        channels: set[str] = set()
        for session_id in self.clients.get(client_id, ()):
            channels |= self.sessions.get(session_id, set())
        return sorted(channels)

    def _drop_member(self, channel: str, session_id: str) -> None:
        members = self.members.get(channel)
        if members is not None:
            members.pop(session_id, None)
            if not members:
                del self.members[channel]
