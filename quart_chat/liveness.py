"""Dead-peer detection for every session of the process, by one periodic sweep.

A peer that vanished without a FIN (a dead laptop, a black-holed NAT) or a frozen client
would keep its session for the TCP timeout, minutes to hours. Under hypercorn the
transport stamps when each socket last sent anything, pongs included (see
:mod:`quart_chat.transport`); a session silent for ping interval + timeout is closed
(4001). One sweep every ``step`` for all sessions, instead of a task and a timer per
session: an idle session costs a dict entry, not a coroutine, and 10,000 idle sessions
cost one wake-up per step, not 10,000. The sweep also sends the pings when hypercorn
does not (``quart-chat serve`` leaves pinging to it, staggered by when each session
opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from . import protocol

if TYPE_CHECKING:
    from .config import Settings
    from .session import Session
    from .transport import Activity

log = logging.getLogger("quart_chat.session")

#: Seconds a ping may take to be written before the sweep gives up on it.
PING_TIMEOUT = 1.0


class _Watched:
    __slots__ = ("activity", "next_ping")

    def __init__(self, activity: Activity, next_ping: float) -> None:
        self.activity = activity
        self.next_ping = next_ping


class Liveness:
    """The sessions whose transport reports activity, swept every ``step`` seconds."""

    def __init__(self, settings: Settings) -> None:
        self.ping_interval = settings.ping_interval
        self.allowed = settings.ping_interval + settings.ping_timeout
        self.step = max(0.05, min(1.0, settings.ping_timeout / 4))
        self._watched: dict[Session, _Watched] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._pings: set[asyncio.Task[None]] = set()
        #: When the event loop last came back from a pause (see _sweep_forever).
        self._resumed = 0.0

    def watch(self, session: Session, activity: Activity) -> None:
        """Close ``session`` when its peer falls silent; ping it if hypercorn does not."""
        self._watched[session] = _Watched(activity, time.monotonic() + self.ping_interval)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_forever(), name="quart-chat liveness")

    def forget(self, session: Session) -> None:
        self._watched.pop(session, None)

    async def _sweep_forever(self) -> None:
        """Sweep while any session is watched; the next ``watch`` starts it again."""
        while self._watched:
            due = time.monotonic() + self.step
            await asyncio.sleep(self.step)
            now = time.monotonic()
            if now - due > self.step:
                # The process did not run for a while (a long garbage collection, a
                # starved CPU, a debugger): no ping went out and no pong was read
                # meanwhile, so that silence says nothing about the peers.
                self._resumed = now
            self.sweep(now)

    def sweep(self, now: float) -> None:
        for session, watched in list(self._watched.items()):
            activity = watched.activity
            if not activity.hypercorn_pings and now >= watched.next_ping:
                watched.next_ping = now + self.ping_interval
                self._ping(activity)
            silent = now - max(session.last_frame, activity.last, self._resumed)
            if silent > self.allowed:
                log.info("session %s: no pong or frame for %.1fs; closing", session.id, silent)
                self._watched.pop(session, None)
                session.close(protocol.CLOSE_DEAD_PEER, "no pong: peer presumed dead")

    def _ping(self, activity: Activity) -> None:
        task = asyncio.get_running_loop().create_task(_ping(activity))
        self._pings.add(task)
        task.add_done_callback(self._pings.discard)


async def _ping(activity: Activity) -> None:
    with contextlib.suppress(Exception):  # a closing socket: its session ends soon
        await asyncio.wait_for(activity.ping(), PING_TIMEOUT)
