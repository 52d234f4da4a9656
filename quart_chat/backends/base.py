"""What every backend provides: a broker (a dumb pipe between processes) and a store (who
is subscribed to what), and the helpers every backend shares.

Fan-out to sockets lives in exactly one place, :class:`quart_chat.hub.Hub`; a broker only
moves bytes for channels the hub asked for and reports when delivery may have had a gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ChatError

if TYPE_CHECKING:
    from ..service import ChatService
    from .node_heartbeat import NodeHeartbeat

log = logging.getLogger("quart_chat.broker")

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

    async def publish(self, channel: str, payload: bytes) -> int:
        """Send ``payload`` to every subscriber of ``channel`` in every process.

        Returns how many processes it reached, as the backend counts them (Redis:
        PUBLISH's answer); the control path (:mod:`quart_chat.control`) waits for that
        many answers.
        """

    async def health(self) -> dict[str, Any]:
        """``{"connected": bool, ...}`` for ``/healthz``; never raises."""


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

    async def reserve(self, session_id: str, client_id: str, limit: int) -> bool:
        """Record ``session_id`` for ``client_id`` if the client has fewer than ``limit``
        sessions (on every process), in one atomic step; False records nothing.

        Handshakes racing each other cannot both take the last slot. The slot is given
        back by :meth:`disconnect` (a session that never ran calls it too).
        """

    async def claim(self, key: str, ttl: float) -> bool:
        """True for exactly one caller of ``key`` among every process sharing the store,
        until ``ttl`` seconds have passed (a timer period runs once, not once per process).
        """


@dataclass(frozen=True)
class Backend:
    """What a backend module's ``open`` returns for one server process."""

    broker: Broker
    store: Store
    #: Shared stores (the Redis family) need each process to beat, so that survivors
    #: clean up after a process that died; this builds that heartbeat for the service.
    heartbeat: Callable[[ChatService], NodeHeartbeat] | None = None


class SessionRecord(Protocol):
    """The part of a session its store records are made of."""

    @property
    def id(self) -> str: ...

    @property
    def client_id(self) -> str: ...

    @property
    def channels(self) -> Collection[str]: ...


async def restore_records(store: Store, sessions: Iterable[SessionRecord]) -> bool:
    """Write the records of ``sessions`` again: a restarted Redis forgot them, or a
    reaper removed them while this process was presumed dead. False (logged) if the
    store failed part way; the next gap or heartbeat tries again."""
    try:
        for session in list(sessions):
            await store.connect(session.id, session.client_id)
            for channel in sorted(session.channels):
                await store.join(session.id, session.client_id, channel)
    except ChatError:
        log.warning("could not restore subscription records", exc_info=True)
        return False
    return True
