"""The embedded broker: in-process delivery, the default when no Redis URL is given."""

from __future__ import annotations

from typing import Any

from .base import Deliver, GapNotice


class MemoryBroker:
    """Delivers within this process only; refused with several workers (see Settings)."""

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
