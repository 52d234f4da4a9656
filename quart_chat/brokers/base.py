"""The broker interface: a dumb pipe that carries encoded frames between processes.

Fan-out to sockets lives in exactly one place, :class:`quart_chat.hub.Hub`; a broker only
moves bytes for channels the hub asked for and reports when delivery may have had a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

#: Called by the broker for each message: (channel, encoded ``message`` frame).
Deliver = Callable[[str, bytes], None]
#: Called after the broker lost and rebuilt its subscriptions: the channels affected.
GapNotice = Callable[[Collection[str]], None]


class Broker(Protocol):
    """What the hub needs from a pub/sub backend."""

    #: Short name shown by ``/healthz`` (``memory``, ``redis``).
    name: str

    async def start(self, deliver: Deliver, on_gap: GapNotice) -> None:
        """Connect and start delivering; raise ``Unavailable`` if the backend is down."""

    async def close(self) -> None:
        """Stop delivering and release connections."""

    async def subscribe(self, channel: str) -> None:
        """Deliver ``channel`` from now on; return only once the subscription is live."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel``."""

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every subscriber of ``channel`` in every process."""

    async def health(self) -> dict[str, Any]:
        """``{"connected": bool, ...}`` for ``/healthz``; never raises."""
