"""The node heartbeat: each server process beats in Redis, and survivors reap the dead.

(So that channel presence heals after a crash; "presence" elsewhere means the members
of a channel.)

Every server process (node) using Redis registers itself in ``P:nodes`` (a sorted set,
score = last heartbeat, Redis server time) every ``node_ttl / 5`` seconds and lists its
live sessions in ``P:node:<node_id>`` (a hash session id -> client id). A process that
dies without cleaning up (SIGKILL, OOM, power loss) stops beating; after ``3/5`` of
``node_ttl`` without a beat, any surviving process takes a short lock on it and removes
its sessions from the per-client and presence records, then (with ``join_leave``) sends
their ``leave`` frames and calls the ``client_disconnected`` hook once for each of them
with a :class:`LostSession` (``close_code`` 1006). So a dead node's clients vanish
from ``presence`` within ``node_ttl``.

The ``client_disconnected`` calls for a dead node are **best-effort**: they need a
surviving process with Redis at hand, fire on that process (not the one the client was
connected to), and are lost if every process dies; with no survivors the records are
cleaned by the first process to start again. A live process wrongly presumed dead (its
event loop stalled for longer than the threshold) notices on its next beat and
re-registers its sessions, so presence heals in that direction too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ChatError
from ..hookspecs import hookimpl
from .base import restore_records
from .redis_support import REDIS_DOWN, text

if TYPE_CHECKING:
    from quart import Quart

    from ..service import ChatService
    from ..session import Session
    from .redis import RedisStore

log = logging.getLogger("quart_chat.node_heartbeat")

#: Safety net: a node's session list disappears by itself after a day unrefreshed.
NODE_RECORD_MAX_AGE = 24 * 3600
REAP_LOCK_SECONDS = 30
#: Sessions cleaned per pair of pipelines when sweeping or reaping.
SWEEP_BATCH = 500


@dataclass
class LostSession:
    """What ``client_disconnected`` receives for a session of a dead process."""

    id: str
    client_id: str
    node_id: str
    channels: set[str] = field(default_factory=set)
    close_code: int = 1006
    close_reason: str = "server process lost"
    #: Always True: tells plugins this session ended on another, dead process.
    lost: bool = True


class NodeHeartbeat:
    """The heartbeat and reaper, registered as an in-package plugin when Redis is used."""

    def __init__(self, service: ChatService, *, store: RedisStore) -> None:
        self._service = service
        self._store = store
        self._redis = store.client
        settings = service.settings
        self.node_id = service.node_id
        self.interval = settings.node_ttl / 5
        self.dead_after = settings.node_ttl * 3 / 5
        prefix = settings.key_prefix
        self._nodes_key = f"{prefix}:nodes"
        self._node_prefix = f"{prefix}:node:"
        self._lock_prefix = f"{prefix}:reap:"
        self._task: asyncio.Task[None] | None = None
        self._token = secrets.token_hex(8)
        #: Sessions of dead nodes this process has reaped (for /healthz and tests).
        self.reaped = 0
        self._down_logged = False
        # True while this node is listed in P:nodes (it has had sessions since its beat)
        self._registered = False
        #: Ended sessions whose records may still be in Redis (id -> client id): swept on
        #: the next beat, whether or not they made it into this node's list.
        self._ended: dict[str, str] = {}
        #: Live sessions this node could not list (Redis unreachable as they opened):
        #: listed on the next beat, so a reaper can find them if this process dies.
        self._unlisted: dict[str, str] = {}
        #: The beat that registers this node, shared by the sessions that wait for it.
        self._registering: asyncio.Future[None] | None = None
        #: The latest round of the heartbeat loop (shutdown waits for it to finish).
        self._round: asyncio.Future[None] | None = None

    def node_key(self, node_id: str) -> str:
        return self._node_prefix + node_id

    # -- hooks ----------------------------------------------------------------------

    @hookimpl
    async def startup(self, app: Quart) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await self.beat()
            await self.reap()  # leftovers of processes that died while none was running
        self._task = asyncio.create_task(self._forever(), name="quart-chat node heartbeat")

    @hookimpl
    async def shutdown(self, app: Quart) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A beat cut off mid-pipeline may still reach Redis after the cleanup below (it
        # goes over another connection) and list this node again: let it finish first.
        pending = [beat for beat in (self._round, self._registering) if beat is not None]
        if pending:
            await asyncio.wait(pending)
        with contextlib.suppress(*REDIS_DOWN, ChatError):
            await self.sweep()
            # Only once swept: while the list stands, a survivor (or the next process to
            # start) reaps what is left, as for a node that died.
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrem(self._nodes_key, self.node_id)
            pipe.delete(self.node_key(self.node_id))
            await pipe.execute()

    async def list_session(self, session: Session) -> None:
        """List a new session under this node (and register the node with its first
        sessions); if Redis is unreachable, the next beat lists it."""
        try:
            await self._store.batch.run(
                ("HSET", self.node_key(self.node_id), session.id, session.client_id))
        except REDIS_DOWN:
            if not session.finished.is_set():
                self._unlisted[session.id] = session.client_id
        if session.finished.is_set():  # it ended while this ran: its records may be back
            self._ended[session.id] = session.client_id
        with contextlib.suppress(*REDIS_DOWN):  # else the next beat registers the node
            if not self._registered:
                await self._first_beat()

    @hookimpl
    async def client_disconnected(self, session: Session | LostSession) -> None:
        if isinstance(session, LostSession):
            return
        self._unlisted.pop(session.id, None)
        if session.records_left:  # stays listed, so the sweep (or a reaper) finds it
            self._ended[session.id] = session.client_id
            return
        with contextlib.suppress(*REDIS_DOWN):
            await self._store.batch.run(("HDEL", self.node_key(self.node_id), session.id))

    # -- the heartbeat ----------------------------------------------------------------

    async def _first_beat(self) -> None:
        """Register the node as its first sessions open: one beat, however many sessions
        open at once (a reconnect storm), shared by all of them."""
        if self._registering is None or self._registering.done():
            self._registering = asyncio.ensure_future(self.beat())
        await asyncio.shield(self._registering)

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            # Shielded: shutdown cancels the loop, never a round halfway through.
            self._round = asyncio.ensure_future(self._beat_round())
            await asyncio.shield(self._round)

    async def _beat_round(self) -> None:
        """Beat, sweep what this node's ended sessions left, reap dead nodes."""
        try:
            await self.beat()
            if self._ended:
                await self.sweep()
            await self.reap()
            self._down_logged = False
        except REDIS_DOWN as exc:
            if not self._down_logged:
                log.warning("node heartbeat: Redis unreachable (%s)", type(exc).__name__)
                self._down_logged = True
        except Exception:
            log.exception("node heartbeat failed")

    async def _now(self) -> float:
        seconds, micros = await self._redis.time()
        return float(seconds) + micros / 1e6

    async def beat(self) -> None:
        """Refresh this node's heartbeat; re-register sessions if we were reaped.

        A node without sessions has nothing anyone would need to clean up, so it takes
        itself off the list (an idle server leaves no keys in Redis).
        """
        now = await self._now()
        if not self._service.sessions:
            if self._registered:
                await self._redis.zrem(self._nodes_key, self.node_id)
                self._registered = False
            return
        unlisted, self._unlisted = self._unlisted, {}
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._nodes_key, {self.node_id: now})
        if unlisted:
            pipe.hset(self.node_key(self.node_id), mapping=unlisted)  # type: ignore[arg-type]
        pipe.expire(self.node_key(self.node_id), NODE_RECORD_MAX_AGE)
        try:
            added = (await pipe.execute())[0]
        except BaseException:
            self._unlisted = {**unlisted, **self._unlisted}
            raise
        if added and self._registered:
            await self._restore()
        self._registered = True

    async def _restore(self) -> None:
        """A survivor reaped this live node (its loop stalled): write its records and its
        list of sessions again."""
        sessions = list(self._service.sessions)
        log.warning("node %s was presumed dead; re-registering %d sessions",
                    self.node_id, len(sessions))
        await restore_records(self._store, sessions)
        if sessions:
            listed = {session.id: session.client_id for session in sessions}
            await self._redis.hset(self.node_key(self.node_id), mapping=listed)  # type: ignore[arg-type]

    async def sweep(self) -> int:
        """Remove the records of this node's ended sessions that are still listed.

        A session that could not clean up after itself (Redis unreachable for a moment,
        the server stopping) stays in this node's list; this removes its records in
        bulk, with no hook calls (``client_disconnected`` ran when it ended).
        """
        known, self._ended = self._ended, {}
        try:
            listed = await self._redis.hgetall(self.node_key(self.node_id))
            live = {session.id for session in self._service.sessions}
            leftover = {**known, **{text(raw_id): text(raw_client)
                                    for raw_id, raw_client in listed.items()}}
            ended = [(session_id, client_id, ()) for session_id, client_id in leftover.items()
                     if session_id not in live]
            for start in range(0, len(ended), SWEEP_BATCH):
                batch = ended[start:start + SWEEP_BATCH]
                await self._store.disconnect_many(batch)
                await self._redis.hdel(self.node_key(self.node_id), *(s[0] for s in batch))
        except BaseException:
            self._ended = {**known, **self._ended}
            raise
        if ended:
            log.info("swept the records of %d ended sessions", len(ended))
        return len(ended)

    async def reap(self) -> int:
        """Clean up after every node whose heartbeat is too old; sessions removed."""
        now = await self._now()
        dead = await self._redis.zrangebyscore(self._nodes_key, "-inf", now - self.dead_after)
        removed = 0
        for raw in dead:
            node_id = text(raw)
            if node_id != self.node_id:
                removed += await self._reap_node(node_id)
        return removed

    async def _reap_node(self, node_id: str) -> int:
        lock = self._lock_prefix + node_id
        if not await self._redis.set(lock, self._token, nx=True, ex=REAP_LOCK_SECONDS):
            return 0  # another survivor is on it
        lost: list[LostSession] = []
        try:
            sessions = await self._redis.hgetall(self.node_key(node_id))
            entries = [(text(raw_id), text(raw_client), ()) for raw_id, raw_client
                       in sessions.items()]
            for start in range(0, len(entries), SWEEP_BATCH):
                batch = entries[start:start + SWEEP_BATCH]
                channels = await self._store.disconnect_many(batch)
                lost += [LostSession(session_id, client_id, node_id, channels[session_id])
                         for session_id, client_id, _ in batch]
            pipe = self._redis.pipeline(transaction=False)
            pipe.delete(self.node_key(node_id))
            pipe.zrem(self._nodes_key, node_id)
            await pipe.execute()
        finally:
            with contextlib.suppress(*REDIS_DOWN):
                await self._redis.delete(lock)
        if lost:
            log.warning("node %s stopped beating; removed its %d sessions from presence",
                        node_id, len(lost))
        self.reaped += len(lost)
        for session in lost:
            # join/leave (issue 15): subscribers hear that a dead process's sessions left
            await self._service.membership("leave", sorted(session.channels),
                                           session.client_id, session.id)
            await self._service.hooks.client_disconnected(session)
        return len(lost)

