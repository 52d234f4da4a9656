"""Who is subscribed to what: per-session channel records and per-channel presence."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class Store(Protocol):
    """The subscription record. A session is one socket; a client id may have several."""

    async def connect(self, session_id: str, client_id: str) -> None:
        """Record that ``client_id`` has a session ``session_id``."""

    async def join(self, session_id: str, client_id: str, channel: str) -> None:
        """Record that the session is subscribed to ``channel`` (presence included)."""

    async def leave(self, session_id: str, client_id: str, channel: str) -> None:
        """Forget one subscription of the session."""

    async def disconnect(self, session_id: str, client_id: str, channels: Collection[str]) -> None:
        """Forget the session and all its subscriptions; leaves no stale entry."""

    async def presence(self, channel: str) -> list[str]:
        """Client ids with at least one session in ``channel``, sorted."""

    async def client_channels(self, client_id: str) -> list[str]:
        """Channels any session of ``client_id`` is subscribed to, sorted."""

    async def session_count(self, client_id: str) -> int:
        """How many live sessions ``client_id`` has (on every process)."""
