"""The broker interface: a dumb pipe that carries encoded frames between processes.

Fan-out to sockets lives in exactly one place, :class:`quart_chat.hub.Hub`; a broker only
moves bytes for channels the hub asked for and reports when delivery may have had a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Protocol

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


class Confirmations:
    """Subscribers waiting for Redis to confirm a (S)SUBSCRIBE, per wire channel.

    ``subscribe`` must return only once the subscription is live, but the confirmation
    arrives on the pub/sub connection's reader: the caller waits on a future that the
    reader resolves, or fails when the connection is lost.
    """

    def __init__(self) -> None:
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}

    @contextlib.contextmanager
    def expect(self, wire: bytes) -> Iterator[asyncio.Future[None]]:
        """A future resolved by :meth:`confirm` (or failed by :meth:`fail`) for ``wire``;
        forgotten when the block ends, however it ends."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wire, []).append(future)
        try:
            yield future
        finally:
            waiting = self._waiting.get(wire, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(wire, None)

    def confirm(self, wire: bytes) -> None:
        for future in self._waiting.pop(wire, []):
            if not future.done():
                future.set_result(None)

    def fail(self, wires: Iterable[bytes], exc: BaseException) -> None:
        for wire in list(wires):
            for future in self._waiting.pop(wire, []):
                if not future.done():
                    future.set_exception(exc)

    def fail_all(self, exc: BaseException) -> None:
        self.fail(self._waiting, exc)


#: Seconds :func:`cancel_and_wait` keeps cancelling before it gives up and logs.
STOP_BOUND = 5.0


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have ended, cancelling again while one runs.

    A single ``cancel()`` is not enough: on Python 3.11 ``asyncio.wait_for`` (used here
    and inside redis-py) swallows a cancellation that lands just as its inner call
    completes, and a reconnect loop then carries on for good. Bounded by ``STOP_BOUND``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_BOUND
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
        if pending and loop.time() > deadline:
            log.error("broker tasks still running after %.0fs: %s", STOP_BOUND,
                      sorted(task.get_name() for task in pending))
            return
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("broker task %s ended with %r", task.get_name(), task.exception())
