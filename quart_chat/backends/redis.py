"""One Redis (``redis://``, ``rediss://``, ``unix://``): the broker, the store and
``open``.

The broker keeps ONE pub/sub connection per process for all channels. redis-py's PubSub
would reconnect and resubscribe silently, and a pub/sub client cut by Redis for a full
output buffer loses messages without an exception. So this broker owns reconnection
itself (the pub/sub client has no retries), proves liveness with a probe message it
publishes to itself, and tells the hub about every gap it could have caused. Channel
``c`` travels as ``P:ch:c``; the server's own reserved channels (``@control``) as
``P:ctl:@control``, out of sight of anything that lists client channels.

The store's key layout (``P`` is the prefix):

- ``P:session:<session_id>`` SET of channels the session is subscribed to
- ``P:client:<client_id>``   SET of the client's live session ids
- ``P:presence:<channel>``   HASH session_id -> client_id (who is in the channel)
- ``P:claim:<key>``          STRING with a TTL: the one process that claimed ``key``
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Collection
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from .. import metrics
from ..config import Settings
from ..errors import Unavailable
from ..tasks import cancel_and_wait
from .base import Backend, Broker, Deliver, GapNotice
from .keys import RESERVED
from .node_heartbeat import NodeHeartbeat
from .redis_support import (
    BACKOFF_FIRST,
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    REDIS_DOWN,
    SUBSCRIBE_TIMEOUT,
    Command,
    Confirmations,
    Pipeliner,
    ProbeCount,
    PubSubStalled,
    bounded_publish,
    redact,
    text,
)

log = logging.getLogger("quart_chat.redis")

COMMAND_POOL_SIZE = 16
#: Batched pipelines in flight at once: half the pool, so the node heartbeat, health
#: checks and probes always find a connection.
PIPELINES_IN_FLIGHT = COMMAND_POOL_SIZE // 2
#: The longest wait between two attempts to restore the pub/sub connection.
BACKOFF_MAX = 5.0


def open(url: str, settings: Settings, node_id: str) -> Backend:
    """The broker, store and node heartbeat for one Redis."""
    commands = command_client(url, f"{settings.key_prefix}:{node_id}:commands")
    store = RedisStore(commands, prefix=settings.key_prefix)
    broker = RedisBroker(url, prefix=settings.key_prefix, node_id=node_id, client=commands,
                         batch=store.batch, probe_interval=settings.redis_probe_interval)
    return shared(broker, store)


def shared(broker: Broker, store: RedisStore) -> Backend:
    """A backend whose records every process shares: each process also beats, so that
    survivors clean up after one that died (see :mod:`.node_heartbeat`)."""
    return Backend(broker, store, functools.partial(NodeHeartbeat, store=store))


def client(url: str, client_name: str) -> aioredis.Redis:
    """A command client of its own (a plugin's), whose ``aclose()`` releases its pool."""
    redis = command_client(url, client_name)
    redis.auto_close_connection_pool = True
    return redis


def command_client(url: str, name: str) -> aioredis.Redis:
    """A client with a small bounded pool for commands (publish, store operations)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        client_name=name,
        max_connections=COMMAND_POOL_SIZE,
        timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    )
    return aioredis.Redis(connection_pool=pool)


# -- the broker ------------------------------------------------------------------------


class RedisBroker:
    """Carries frames through Redis pub/sub; channel names are namespaced by ``prefix``."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        node_id: str,
        client: aioredis.Redis,
        batch: Pipeliner | None = None,
        probe_interval: float = 1.0,
    ) -> None:
        self._url = url
        self._redis = client
        self._batch = batch or Pipeliner(client, max_in_flight=PIPELINES_IN_FLIGHT)
        self._prefix = f"{prefix}:ch:".encode()
        self._control_prefix = f"{prefix}:ctl:".encode()
        self._probe_channel = f"{prefix}:probe:{node_id}".encode()
        self._client_name = f"{prefix}:{node_id}:pubsub"
        self._probe_interval = probe_interval
        self._probes = ProbeCount(probe_interval)
        self._channels: set[str] = set()
        self._pending = Confirmations()
        #: (channel, wire) waiting for the next SUBSCRIBE (one command carries them all).
        self._to_subscribe: list[tuple[str, bytes]] = []
        self._subscribing: set[asyncio.Task[None]] = set()
        self._pubsub: Any = None
        self._connected = asyncio.Event()
        self._reconnects = 0
        self._last_error: str | None = None
        self._deliver: Deliver | None = None
        self._on_gap: GapNotice | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, deliver: Deliver, on_gap: GapNotice) -> None:
        self._deliver, self._on_gap = deliver, on_gap
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="quart-chat redis listener"),
            asyncio.create_task(self._probe_forever(), name="quart-chat redis probe"),
        ]
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT + SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            await self.close()
            raise Unavailable(
                f"cannot reach Redis at {redact(self._url)}: {self._last_error}"
            ) from None

    async def close(self) -> None:
        await cancel_and_wait(self._tasks, what="broker tasks")
        self._tasks = []
        self._connected.clear()
        metrics.redis_pubsub_up(False)
        with contextlib.suppress(*REDIS_DOWN):
            await self._redis.aclose(close_connection_pool=True)

    # -- operations ----------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        if not self._connected.is_set():
            raise Unavailable("the message broker is unreachable; retry shortly")
        wire = self._wire(channel)
        with self._pending.expect(wire) as confirmed:
            self._channels.add(channel)
            self._queue_subscribe(channel, wire)
            try:
                await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT)
            except asyncio.CancelledError:
                self._channels.discard(channel)
                raise
            except (*REDIS_DOWN, PubSubStalled) as exc:
                self._channels.discard(channel)
                raise Unavailable("the message broker is unreachable; retry shortly") from exc

    def _queue_subscribe(self, channel: str, wire: bytes) -> None:
        """Send ``wire`` in the next SUBSCRIBE: the sessions that subscribe in one turn
        of the event loop (a reconnect storm) share one command."""
        if not self._to_subscribe:
            asyncio.get_running_loop().call_soon(self._send_subscribe,
                                                 context=contextvars.Context())
        self._to_subscribe.append((channel, wire))

    def _send_subscribe(self) -> None:
        queued, self._to_subscribe = self._to_subscribe, []
        pubsub = self._pubsub
        if pubsub is None:  # lost meanwhile: the listener fails the waiting subscribers
            return
        # Not the wires whose subscribers gave up meanwhile (their channel is forgotten).
        wires = [wire for channel, wire in queued if channel in self._channels]
        if not wires:
            return
        task = asyncio.get_running_loop().create_task(pubsub.subscribe(*wires))
        self._subscribing.add(task)
        task.add_done_callback(functools.partial(self._subscribe_sent, wires))

    def _subscribe_sent(self, wires: list[bytes], task: asyncio.Task[None]) -> None:
        self._subscribing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._pending.fail(wires, task.exception() or PubSubStalled("SUBSCRIBE failed"))

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._connected.is_set():
            with contextlib.suppress(*REDIS_DOWN):
                await self._pubsub.unsubscribe(self._wire(channel))
        # While disconnected there is nothing to do: the next connection only
        # resubscribes what is still in self._channels.

    async def publish(self, channel: str, payload: bytes) -> int:
        if not self._connected.is_set():  # known down: answer now, not after a timeout
            raise Unavailable("the message broker is unreachable; retry shortly")
        return await bounded_publish(self._batch.one("PUBLISH", self._wire(channel), payload))

    def _wire(self, channel: str) -> bytes:
        """``P:ch:<channel>``, or ``P:ctl:<channel>`` for a reserved one."""
        kind = self._control_prefix if channel.startswith(RESERVED) else self._prefix
        return kind + channel.encode()

    async def health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self._redis.ping(), COMMAND_TIMEOUT)
            commands = True
        except REDIS_DOWN:
            commands = False
        pubsub = self._connected.is_set()
        return {
            "connected": commands and pubsub,
            "pubsub": pubsub,
            "pubsub_age": round(time.monotonic() - self._probes.answered_at, 3),
            "reconnects": self._reconnects,
            "channels": len(self._channels),
        }

    # -- the listener --------------------------------------------------------------

    async def _listen_forever(self) -> None:
        delay = BACKOFF_FIRST
        first = True
        while True:
            try:
                await self._listen_once(resubscribed=not first)
            except asyncio.CancelledError:
                raise
            except (*REDIS_DOWN, PubSubStalled) as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                if self._connected.is_set():
                    log.warning("redis pub/sub lost (%s); reconnecting", self._last_error)
                else:
                    log.debug("redis pub/sub still down (%s)", self._last_error)
            except Exception:
                self._last_error = "unexpected error"
                log.exception("redis pub/sub listener failed; reconnecting")
            if self._connected.is_set():
                delay = BACKOFF_FIRST  # it was up: start the backoff again from the bottom
            self._connected.clear()
            metrics.redis_pubsub_up(False)
            self._pending.fail_all(PubSubStalled("pub/sub connection lost"))
            first = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _listen_once(self, *, resubscribed: bool) -> None:
        client = self._pubsub_client()
        pubsub = client.pubsub()
        try:
            channels = sorted(self._channels)
            wires = [self._probe_channel, *(self._wire(c) for c in channels)]
            await asyncio.wait_for(pubsub.subscribe(*wires), SUBSCRIBE_TIMEOUT)
            await self._await_confirmations(pubsub, len(wires))
            self._pubsub = pubsub
            self._probes.answered()
            self._connected.set()
            metrics.redis_pubsub_up(True)
            if resubscribed:
                self._reconnects += 1
                metrics.redis_reconnected()
                log.info("redis pub/sub reconnected; resubscribed %d channels", len(channels))
                if self._on_gap is not None:
                    self._on_gap(channels)
            await self._read(pubsub)
        finally:
            self._pubsub = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 1.0)

    def _pubsub_client(self) -> aioredis.Redis:
        """A fresh client for one pub/sub connection (Sentinel asks for the primary)."""
        return aioredis.Redis.from_url(
            self._url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            client_name=self._client_name,
        )

    async def _await_confirmations(self, pubsub: Any, count: int) -> None:
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PubSubStalled("no reply to SUBSCRIBE")
            message = await pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "subscribe":
                count -= 1
            elif message is not None:
                self._handle(message)

    async def _read(self, pubsub: Any) -> None:
        prefix, probe, deliver = self._prefix, self._probe_channel, self._deliver
        control = self._control_prefix
        skip, control_skip = len(prefix), len(control)
        if deliver is None:
            raise RuntimeError("start() was not called")
        while True:
            message = await pubsub.get_message(timeout=self._probe_interval)
            if message is None:
                self._probes.check()
                continue
            channel = message["channel"]
            if message["type"] == "message" and channel.startswith(prefix):
                deliver(channel[skip:].decode(), message["data"])
            elif message["type"] == "message" and channel.startswith(control):
                deliver(channel[control_skip:].decode(), message["data"])
            elif channel == probe:
                self._probes.answered()
            else:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            self._pending.confirm(message["channel"])
        elif message["type"] == "message" and message["channel"] == self._probe_channel:
            self._probes.answered()

    async def _probe_forever(self) -> None:
        """Publish to our own probe channel; the listener proves it is caught up. A probe
        counts as sent every interval even while the last PUBLISH still hangs (a
        black-holed network), so the listener notices after ``ProbeCount.limit``
        intervals, not after the command timeout."""
        publishing: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(self._probe_interval)
                if not self._connected.is_set():
                    continue
                self._probes.sent()
                if publishing is None or publishing.done():
                    publishing = asyncio.create_task(self._publish_probe())
        finally:
            if publishing is not None:
                await cancel_and_wait([publishing], what="the redis probe")

    async def _publish_probe(self) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await self._redis.publish(self._probe_channel, b"probe")


# -- the store -------------------------------------------------------------------------

#: KEYS[1] the client's session set; ARGV session id, limit: 1 if added, 0 if full.
RESERVE = """
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('SADD', KEYS[1], ARGV[1])
    return 1
end
return 0
"""


class RedisStore:
    """Records kept in Redis so every process (and operators) can see them."""

    #: What a command raises when Redis could not carry it out: ``unavailable``.
    failures: tuple[type[BaseException], ...] = REDIS_DOWN
    unreachable = "the subscription store (Redis) is unreachable"

    def __init__(self, client: aioredis.Redis, *, prefix: str,
                 batch: Pipeliner | None = None) -> None:
        #: The command client, shared with the node heartbeat.
        self.client = client
        #: Batches the commands of every session (shared with the broker's publishes).
        self.batch = batch or Pipeliner(client, max_in_flight=PIPELINES_IN_FLIGHT)
        self._prefix = prefix

    def session_key(self, session_id: str, client_id: str) -> str:
        return f"{self._prefix}:session:{session_id}"

    def client_key(self, client_id: str) -> str:
        return f"{self._prefix}:client:{client_id}"

    def presence_key(self, channel: str) -> str:
        return f"{self._prefix}:presence:{channel}"

    async def connect(self, session_id: str, client_id: str) -> None:
        await self._run(("SADD", self.client_key(client_id), session_id))

    async def join(self, session_id: str, client_id: str, channel: str) -> None:
        await self._run(("SADD", self.session_key(session_id, client_id), channel),
                        ("HSET", self.presence_key(channel), session_id, client_id))

    async def leave(self, session_id: str, client_id: str, channel: str) -> None:
        await self._run(("SREM", self.session_key(session_id, client_id), channel),
                        ("HDEL", self.presence_key(channel), session_id))

    async def disconnect(self, session_id: str, client_id: str, channels: Collection[str]) -> None:
        await self.disconnect_many([(session_id, client_id, channels)])

    async def disconnect_many(
        self, sessions: Collection[tuple[str, str, Collection[str]]]
    ) -> dict[str, set[str]]:
        """Forget many sessions in two round trips (shutdown, sweeps, reaping dead nodes).

        Each entry is (session id, client id, channels known to be subscribed); the
        channels recorded in Redis are removed too, and returned per session id.
        """
        if not sessions:
            return {}
        recorded = await self._run(*(("SMEMBERS", self.session_key(session_id, client_id))
                                     for session_id, client_id, _ in sessions))
        found: dict[str, set[str]] = {}
        removals: list[Command] = []
        for (session_id, client_id, channels), members in zip(sessions, recorded, strict=True):
            found[session_id] = {text(c) for c in members}
            for channel in {*channels, *found[session_id]}:
                removals.append(("HDEL", self.presence_key(channel), session_id))
            removals.append(("DEL", self.session_key(session_id, client_id)))
            removals.append(("SREM", self.client_key(client_id), session_id))
        await self._run(*removals)
        return found

    async def presence(self, channel: str) -> list[str]:
        (members,) = await self._run(("HVALS", self.presence_key(channel)))
        return sorted({text(m) for m in members})

    async def reserve(self, session_id: str, client_id: str, limit: int) -> bool:
        # One script, so the count and the add are one step for every process. EVAL
        # rather than EVALSHA: batched in a pipeline, it never meets NOSCRIPT.
        (added,) = await self._run(("EVAL", RESERVE, 1, self.client_key(client_id),
                                    session_id, limit))
        return bool(added)

    async def claim(self, key: str, ttl: float) -> bool:
        # One key, so on a cluster redis-py sends it to the key's slot like any other.
        (claimed,) = await self._run(("SET", f"{self._prefix}:claim:{key}", b"1", "NX", "PX",
                                      max(1, int(ttl * 1000))))
        return bool(claimed)

    async def _run(self, *commands: Command) -> list[Any]:
        """Send ``commands`` in the next batched pipeline (see :class:`.Pipeliner`)."""
        try:
            return await self.batch.run(*commands)
        except self.failures as exc:
            raise Unavailable(self.unreachable) from exc
