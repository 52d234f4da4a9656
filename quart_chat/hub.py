"""The one fan-out: channel -> local sessions, driving the broker's subscriptions.

The first local subscriber of a channel subscribes the broker; the last one to leave
unsubscribes it. A broker message is decoded to text once and put into each local
session's bounded queue without awaiting anything, so a slow socket can never hold up
delivery to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING

from . import metrics, protocol
from .backends.base import Broker

if TYPE_CHECKING:
    from .session import Session

#: Seconds a coalescing sender under load waits for more messages before it writes.
COALESCE_WINDOW = 0.01


class Tick:
    """One timer shared by every coalescing (``?batch=1``) sender under load: each waits
    for the same next tick, so a frame gathers what arrived meanwhile, at the cost of one
    timer per tick for the whole process, not one per socket."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next: asyncio.Future[None] | None = None

    def next(self) -> asyncio.Future[None]:
        """The next tick (await it shielded: it is shared)."""
        tick = self._next
        if tick is None or tick.done():
            loop = asyncio.get_running_loop()
            self._next = tick = loop.create_future()
            loop.call_later(self.seconds, _fire, tick)
        return tick


def _fire(tick: asyncio.Future[None]) -> None:
    if not tick.done():
        tick.set_result(None)


class Hub:
    """Local membership of channels for one server process."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.members: dict[str, set[Session]] = {}
        #: Reserved channels (names no client may use) whose payloads go to a callback
        #: instead of to sessions: the control path between processes (control.py).
        self.listeners: dict[str, Callable[[bytes], None]] = {}
        # Serialises the broker subscribe/unsubscribe transitions (first join, last
        # leave) of each channel; other channels' go on meanwhile, so a storm of sessions
        # each joining its own channel waits for one batched SUBSCRIBE, not thousands
        # in a row. A lock lives while someone holds or waits for it: (lock, users).
        self._transitions: dict[str, tuple[asyncio.Lock, int]] = {}
        #: What coalescing senders under load wait for (see Session._send_loop).
        self.tick = Tick(COALESCE_WINDOW)

    async def join(self, session: Session, channel: str) -> None:
        """Add ``session`` to ``channel``; may raise ``Unavailable`` from the broker."""
        members = self.members.get(channel)
        if members is None:
            async with self._transition(channel):
                members = self.members.get(channel)
                if members is None:
                    await self.broker.subscribe(channel)
                    members = self.members[channel] = set()
        metrics.subscribed(first_local=not members)
        members.add(session)

    async def leave(self, session: Session, channel: str) -> None:
        """Remove ``session`` from ``channel``; unsubscribe the broker if it was the last."""
        members = self.members.get(channel)
        if members is None or session not in members:
            return
        members.discard(session)
        metrics.unsubscribed(last_local=not members)
        if members:
            return
        async with self._transition(channel):
            if self.members.get(channel) is members and not members:
                del self.members[channel]
                await self.broker.unsubscribe(channel)

    async def listen(self, channel: str, callback: Callable[[bytes], None]) -> None:
        """Hand every payload of the reserved ``channel`` to ``callback`` (never awaited)."""
        self.listeners[channel] = callback
        await self.broker.subscribe(channel)

    @contextlib.asynccontextmanager
    async def _transition(self, channel: str) -> AsyncIterator[None]:
        lock, users = self._transitions.get(channel) or (asyncio.Lock(), 0)
        self._transitions[channel] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._transitions[channel]
            if users == 1:
                del self._transitions[channel]
            else:
                self._transitions[channel] = (lock, users - 1)

    def deliver(self, channel: str, payload: bytes) -> None:
        """Broker callback: queue one encoded frame for every local subscriber."""
        members = self.members.get(channel)
        if members:
            frame = payload.decode()
            metrics.delivered(len(members))
            for session in tuple(members):
                session.deliver(frame)
        elif channel in self.listeners:
            self.listeners[channel](payload)

    def gap(self, channels: Collection[str]) -> None:
        """Broker callback: tell local subscribers that messages may have been missed."""
        for channel in channels:
            frame = protocol.encode(
                {"type": "gap", "channel": channel,
                 "reason": "broker reconnected; messages may have been missed"}
            )
            members = tuple(self.members.get(channel, ()))
            metrics.gap_sent(len(members))
            for session in members:
                session.deliver(frame)
