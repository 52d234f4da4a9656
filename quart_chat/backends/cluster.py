"""Redis Cluster (``redis+cluster://``): the broker, the hash-tagged store and ``open``.

The URL form is ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (any seed
nodes). The broker uses sharded pub/sub, one pub/sub connection per shard in use.

Channel ``c`` travels as the shard channel ``P:ch:{c}`` (``P`` is the key prefix). The
hash tag puts it in the slot of the channel's other keys (``P:presence:{c}``, a history
stream ``P:history:{c}``), so one shard carries everything about a channel, and SPUBLISH
keeps its traffic on that shard instead of broadcasting it over the cluster bus to every
node as PUBLISH does. Pub/sub capacity grows with the number of shards.

redis-py 8's asyncio ``ClusterPubSub`` can SSUBSCRIBE, but it moves and restores
subscriptions silently, and the hub must hear about every gap. So this module keeps the
smallest piece it needs on top of redis-py's ``Connection`` and ``key_slot``: a slot map
read from ``CLUSTER SLOTS``, and one :class:`_ShardLink` (one TCP connection) per shard
primary that owns at least one of this process's channels. The cluster is followed thus:

- slot migration: when the old owner loses the slot it sends an unsolicited
  ``sunsubscribe``; the channel is re-homed on the new owner and the hub gets a gap
  notice once it is live again;
- a stale slot map: SSUBSCRIBE answers ``MOVED slot host:port``; the map is corrected and
  the channel subscribed where Redis said;
- shard failover: the link's connection fails (or its PINGs go unanswered); the map is
  re-read with capped backoff until a promoted replica owns the slots, and the link's
  channels are subscribed there, each with a gap notice.

The server's own reserved channels (``@control``, see :mod:`quart_chat.control`) are
not shard channels: they travel as ``P:ctl:{@control}`` by classic PUBLISH/SUBSCRIBE, so
the shard channels are exactly the clients' and a shard with none of them has no
sharded subscriber. Every process subscribes them on the primary that owns the hash
tag's slot, and publishes there (redis-py routes PUBLISH by the channel's slot), so
PUBLISH's answer counts every process, as the control path needs. A slot migration
(not a failover) leaves those subscriptions where they were until their link
reconnects: messages still arrive (PUBLISH reaches every node), the count may be short.

Publishing and the store use redis-py's ``RedisCluster``, which follows MOVED/ASK itself.

The store keeps the records of :class:`~quart_chat.backends.redis.RedisStore`, each
hash-tagged by its owner (the part in braces picks the slot):

- ``P:presence:{<channel>}``             HASH session_id -> client_id, on the channel's
  shard: the same slot as the channel's shard channel ``P:ch:{<channel>}`` and its
  history stream ``P:history:{<channel>}``
- ``P:client:{<client_id>}``             SET of the client's live session ids
- ``P:session:{<client_id>}:<session_id>`` SET of channels the session is subscribed to,
  in the client's slot

Multi-key operations never cross slots except ``disconnect``, whose pipeline redis-py
splits per shard (it is not a transaction on one Redis either).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisClusterException, ResponseError

from ..config import Settings
from ..errors import ConfigError, Unavailable
from ..tasks import cancel_and_wait
from .base import Backend, Deliver, GapNotice
from .keys import RESERVED, tagged, wire_kind
from .redis import RedisStore, shared
from .redis_support import (
    BACKOFF_FIRST,
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    REDIS_DOWN,
    SUBSCRIBE_TIMEOUT,
    Addr,
    Confirmations,
    ProbeCount,
    PubSubStalled,
    bounded_publish,
    parse_hosts,
    redact,
    split_credentials,
    split_url,
)

log = logging.getLogger("quart_chat.cluster")

SLOTS = 16384
#: Errors that mean "the cluster (or part of it) is not reachable right now".
CLUSTER_DOWN = (*REDIS_DOWN, RedisClusterException)
#: What a command through ``RedisCluster`` may raise when it could not be carried out.
#: The last two are redis-py 8.1 races, not bugs of ours: when a failover makes
#: ``RedisCluster`` rebuild its node table, commands in flight on the old node objects can
#: find their transport closed (``RuntimeError``) or gone (``AttributeError``); they are
#: as retryable as a refused connection.
COMMAND_FAILED = (*CLUSTER_DOWN, RuntimeError, AttributeError)
#: A failover completes within a few node timeouts: retry often, but not in a spin.
BACKOFF_MAX = 1.0
#: Connections per node in the command client: a command holds one while in flight, so
#: this bounds commands in flight per node; past it a publish answers ``unavailable``.
#: (A semaphore that made callers wait for a turn instead cost a third of the saturated
#: publish rate in bench/cluster.py: one more loop iteration per command.)
MAX_CONNECTIONS_PER_NODE = 1024


# -- the URL ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterTarget:
    """Where a cluster is: any seed nodes, and the credentials for every node."""

    seeds: tuple[Addr, ...]
    username: str | None = None
    password: str | None = None


def parse_cluster_url(url: str) -> ClusterTarget:
    """``redis+cluster://[[user]:password@]host:port[,host:port...]`` -> its target."""
    safe = redact(url)
    netloc, path, query = split_url(url, "redis+cluster")
    if query or path.strip("/"):
        raise ConfigError(
            f"QUART_CHAT_REDIS_URL: a cluster URL takes no database or options: {safe} "
            "(Redis Cluster has only database 0)"
        )
    username, password, hosts = split_credentials(netloc)
    return ClusterTarget(parse_hosts(hosts, safe, 6379), username, password)


# -- building the backend --------------------------------------------------------------


def cluster_client(target: ClusterTarget, client_name: str | None = None) -> RedisCluster:
    """The command client: publish and store operations, routed by slot by redis-py."""
    return RedisCluster(
        client_name=client_name,
        startup_nodes=[ClusterNode(host, port) for host, port in target.seeds],
        username=target.username,
        password=target.password,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        max_connections=MAX_CONNECTIONS_PER_NODE,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        # MOVED patches the one slot it names. By default every fifth MOVED closes every
        # connection of the client, in-flight commands' included, to re-read the layout:
        # under slot churn that failed unrelated commands and left connections half
        # closed. A lost node (a failover) still triggers the full re-read.
        reinitialize_steps=0,
    )


def open(url: str, settings: Settings, node_id: str) -> Backend:
    """The broker, the hash-tagged store and the node heartbeat for a cluster URL."""
    if "{" in settings.key_prefix or "}" in settings.key_prefix:
        raise ConfigError(
            "QUART_CHAT_KEY_PREFIX must not contain '{' or '}' with Redis Cluster: "
            "the server puts its own hash tags in every key"
        )
    target = parse_cluster_url(url)
    commands = cluster_client(target, f"{settings.key_prefix}:{node_id}:commands")
    broker = ClusterBroker(
        target,
        prefix=settings.key_prefix,
        node_id=node_id,
        client=commands,
        probe_interval=settings.redis_probe_interval,
    )
    return shared(broker, ClusterStore(commands, prefix=settings.key_prefix))


def client(url: str, client_name: str) -> RedisCluster:
    """A command client of its own (a plugin's); key per-channel data with
    :func:`~quart_chat.backends.keys.channel_key` so it lives on the channel's shard."""
    return cluster_client(parse_cluster_url(url), client_name)


def channel_wire(prefix: str, channel: str) -> bytes:
    """The shard channel of ``channel``: ``P:ch:{channel}``, in the channel's slot
    (``P:ctl:{channel}``, a classic channel, for a reserved one)."""
    return tagged(prefix, wire_kind(channel), channel).encode()


def verbs(wire: bytes) -> tuple[bytes, bytes]:
    """How ``wire`` is subscribed and unsubscribed: sharded, or classic for a reserved
    channel's."""
    if wire.partition(b"{")[2].startswith(RESERVED.encode()):
        return b"SUBSCRIBE", b"UNSUBSCRIBE"
    return b"SSUBSCRIBE", b"SUNSUBSCRIBE"


# -- the broker ------------------------------------------------------------------------


class ClusterBroker:
    """Carries frames by SPUBLISH/SSUBSCRIBE; one pub/sub connection per shard in use."""

    name = "redis-cluster"

    def __init__(
        self,
        target: ClusterTarget,
        *,
        prefix: str,
        node_id: str,
        client: RedisCluster,
        probe_interval: float = 1.0,
    ) -> None:
        self._target = target
        self._client_name = f"{prefix}:{node_id}:pubsub"
        self._redis = client
        self._prefix = prefix
        self.probe_interval = probe_interval
        #: slot -> primary that owns it, as last read (None: unknown or unassigned).
        self._owner: list[Addr | None] = [None] * SLOTS
        #: every node seen, asked in turn for the slot map.
        self._known: list[Addr] = list(target.seeds)
        self._links: dict[Addr, _ShardLink] = {}
        #: wire -> channel for every channel the hub asked for.
        self._wires: dict[bytes, str] = {}
        #: wire -> the link it is subscribed (or being subscribed) on.
        self._home: dict[bytes, _ShardLink] = {}
        #: wires with no link yet (the slot's owner is unknown for the moment).
        self._homeless: set[bytes] = set()
        #: wires whose subscription was lost: the hub gets a gap notice when they are back.
        self._lost: set[bytes] = set()
        self._gap_batch: list[str] = []
        self._pending = Confirmations()
        self._map_task: asyncio.Task[bool] | None = None
        self._rehomer: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._deliver: Deliver | None = None
        self._on_gap: GapNotice | None = None
        self._started = False
        self.reconnects = 0
        self.slot_moves = 0
        self.gaps = 0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, deliver: Deliver, on_gap: GapNotice) -> None:
        self._deliver, self._on_gap = deliver, on_gap
        if not await self._refresh_map():
            raise Unavailable(f"cannot reach Redis Cluster at {self._describe()}")
        try:
            await asyncio.wait_for(self._redis.initialize(), CONNECT_TIMEOUT + COMMAND_TIMEOUT)
        except (*COMMAND_FAILED, Unavailable) as exc:
            raise Unavailable(f"cannot reach Redis Cluster at {self._describe()}: {exc}") from exc
        self._started = True

    async def close(self) -> None:
        self._started = False
        tasks: list[asyncio.Task[Any]] = [link.task for link in self._links.values()]
        tasks += [t for t in (self._map_task, self._rehomer) if t is not None]
        tasks += list(self._retired)
        await cancel_and_wait(tasks, what="broker tasks")
        self._links.clear()
        self._retired.clear()
        with contextlib.suppress(*COMMAND_FAILED):
            await self._redis.aclose()

    # -- operations ----------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        wire = channel_wire(self._prefix, channel)
        if wire in self._wires:
            return
        owner = self._owner[key_slot(wire)] if self._started else None
        link = self._links.get(owner) if owner is not None else None
        if owner is None or (link is not None and link.down):
            raise Unavailable("the message broker is unreachable; retry shortly")
        with self._pending.expect(wire) as confirmed:
            self._wires[wire] = channel
            self._attach(wire, owner)
            try:
                await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT)
            except asyncio.CancelledError:
                self._drop(wire)
                raise
            except (TimeoutError, PubSubStalled) as exc:
                self._drop(wire)
                raise Unavailable("the message broker is unreachable; retry shortly") from exc

    async def unsubscribe(self, channel: str) -> None:
        self._drop(channel_wire(self._prefix, channel))

    async def publish(self, channel: str, payload: bytes) -> int:
        wire = channel_wire(self._prefix, channel)
        send = self._redis.publish if channel.startswith(RESERVED) else self._redis.spublish
        # Bounded: seen in CI, a publish through RedisCluster during a failover's node
        # table rebuild never returned; the client gets ``unavailable`` and retries.
        return await bounded_publish(send(wire, payload), COMMAND_FAILED)

    async def health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(
                self._redis.ping(target_nodes=RedisCluster.PRIMARIES), COMMAND_TIMEOUT
            )
            commands = True
        except COMMAND_FAILED:
            commands = False
        down = sum(1 for link in self._links.values() if not link.live)
        pubsub = self._started and down == 0 and not self._homeless
        return {
            "connected": commands and pubsub,
            "pubsub": pubsub,
            "shards": len(self._links),
            "shards_down": down,
            "reconnects": self.reconnects,
            "slot_moves": self.slot_moves,
            "gaps": self.gaps,
            "channels": len(self._wires),
        }

    # -- placing channels on links -------------------------------------------------

    def _attach(self, wire: bytes, owner: Addr) -> None:
        link = self._links.get(owner)
        if link is None:
            link = self._links[owner] = _ShardLink(self, owner)
        self._home[wire] = link
        link.add(wire)

    def _drop(self, wire: bytes) -> None:
        """Forget ``wire`` entirely (the hub no longer wants it)."""
        self._wires.pop(wire, None)
        self._lost.discard(wire)
        self._homeless.discard(wire)
        link = self._home.pop(wire, None)
        if link is not None:
            link.remove(wire)
            self._close_if_idle(link)

    def _close_if_idle(self, link: _ShardLink) -> None:
        if not link.wires and self._links.get(link.addr) is link:
            del self._links[link.addr]
            if link.task is not asyncio.current_task():
                link.task.cancel()
                self._retired.add(link.task)
                link.task.add_done_callback(self._retired.discard)

    def _rehome(self, wires: Iterable[bytes], link: _ShardLink) -> None:
        """Take ``wires`` off ``link`` and place them again once the map is re-read."""
        for wire in wires:
            link.remove(wire, quiet=True)
            if self._home.get(wire) is link:
                del self._home[wire]
            if wire in self._wires:
                self._homeless.add(wire)
        self._close_if_idle(link)
        if self._homeless and (self._rehomer is None or self._rehomer.done()):
            self._rehomer = asyncio.create_task(self._rehome_forever(),
                                                name="quart-chat cluster rehome")

    async def _rehome_forever(self) -> None:
        delay = BACKOFF_FIRST
        while self._homeless:
            if await self._refresh_map():
                self._place_homeless()
            if not self._homeless:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _place_homeless(self) -> None:
        for wire in sorted(self._homeless):
            owner = self._owner[key_slot(wire)]
            if wire not in self._wires:
                self._homeless.discard(wire)
            elif owner is not None:
                self._homeless.discard(wire)
                self._attach(wire, owner)

    # -- events from links ---------------------------------------------------------

    def _confirmed(self, wire: bytes) -> None:
        self._pending.confirm(wire)
        if wire in self._lost:
            self._lost.discard(wire)
            self.gaps += 1
            if not self._gap_batch:
                # one notice for every channel restored in this pass of the loop: the
                # service rewrites this process's records on each notice
                asyncio.get_running_loop().call_soon(self._flush_gaps)
            self._gap_batch.append(self._wires[wire])

    def _flush_gaps(self) -> None:
        channels, self._gap_batch = self._gap_batch, []
        if channels and self._on_gap is not None:
            self._on_gap(channels)

    def _revoked(self, link: _ShardLink, wire: bytes) -> None:
        """The shard dropped ``wire`` by itself: its slot moved to another shard."""
        self.slot_moves += 1
        log.info("cluster: %s dropped %s (slot %d moved); re-subscribing",
                 _show(link.addr), self._wires.get(wire, wire), key_slot(wire))
        self._lost.add(wire)
        self._owner[key_slot(wire)] = None  # known stale: do not retry the old owner
        self._rehome([wire], link)

    def _moved(self, link: _ShardLink, wires: list[bytes], slot: int, owner: Addr) -> None:
        """SSUBSCRIBE answered MOVED: the map was stale; subscribe where Redis said."""
        self._owner[slot] = owner
        if owner not in self._known:
            self._known.append(owner)
        for wire in wires:
            if self._home.get(wire) is link:
                link.remove(wire, quiet=True)
                del self._home[wire]
                self._attach(wire, owner)
        self._close_if_idle(link)

    def _link_failed(self, link: _ShardLink) -> None:
        """The link lost its connection: what was live there may have missed messages."""
        self._lost |= link.confirmed
        link.confirmed.clear()
        self._pending.fail(link.wires, PubSubStalled("pub/sub connection lost"))

    def _relocate(self, link: _ShardLink) -> None:
        """After a map refresh: move the link's channels whose slots are owned elsewhere."""
        moving = [w for w in link.wires if self._owner[key_slot(w)] != link.addr]
        for wire in moving:
            owner = self._owner[key_slot(wire)]
            link.remove(wire, quiet=True)
            del self._home[wire]
            if owner is None:
                self._homeless.add(wire)
            else:
                self._attach(wire, owner)
        self._close_if_idle(link)
        if self._homeless and (self._rehomer is None or self._rehomer.done()):
            self._rehomer = asyncio.create_task(self._rehome_forever(),
                                                name="quart-chat cluster rehome")

    def _deliver_wire(self, wire: bytes, payload: bytes) -> None:
        channel = self._wires.get(wire)
        if channel is not None and self._deliver is not None:
            self._deliver(channel, payload)

    # -- the slot map --------------------------------------------------------------

    async def _refresh_map(self, avoid: Addr | None = None) -> bool:
        """Re-read the slot map (one read at a time, shared); False if no node answered."""
        if self._map_task is None or self._map_task.done():
            self._map_task = asyncio.create_task(self._read_map(avoid),
                                                 name="quart-chat cluster slots")
        return await asyncio.shield(self._map_task)

    async def _read_map(self, avoid: Addr | None) -> bool:
        candidates = [a for a in dict.fromkeys([*self._owner_addrs(), *self._known]) if a != avoid]
        if avoid is not None:
            candidates.append(avoid)
        for addr in candidates:
            try:
                ranges = await self._cluster_slots(addr)
            except (*CLUSTER_DOWN, ValueError, IndexError) as exc:
                log.debug("cluster: CLUSTER SLOTS from %s failed: %s", _show(addr), exc)
                continue
            owner: list[Addr | None] = [None] * SLOTS
            for start, end, primary, others in ranges:
                owner[start:end + 1] = [primary] * (end + 1 - start)
                for node in (primary, *others):
                    if node not in self._known:
                        self._known.append(node)
            self._owner = owner
            return True
        return False

    def _owner_addrs(self) -> list[Addr]:
        return [a for a in dict.fromkeys(self._owner) if a is not None]

    async def _cluster_slots(self, addr: Addr) -> list[tuple[int, int, Addr, list[Addr]]]:
        conn = self.connection(addr, timeout=1.0)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("CLUSTER", "SLOTS")
            reply = await conn.read_response()
        finally:
            await conn.disconnect(nowait=True)
        ranges = []
        for entry in reply:
            nodes = [(bytes(n[0]).decode() or addr[0], int(n[1])) for n in entry[2:]]
            ranges.append((int(entry[0]), int(entry[1]), nodes[0], nodes[1:]))
        return ranges

    def connection(self, addr: Addr, timeout: float = COMMAND_TIMEOUT) -> Connection:
        """A raw RESP2 connection to one node, with no retries of its own."""
        return Connection(
            host=addr[0],
            port=addr[1],
            username=self._target.username,
            password=self._target.password,
            protocol=2,
            socket_connect_timeout=min(timeout, CONNECT_TIMEOUT),
            socket_timeout=timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            client_name=self._client_name,
        )

    def _describe(self) -> str:
        return ",".join(_show(a) for a in self._target.seeds)


# -- the store -------------------------------------------------------------------------


class ClusterStore(RedisStore):
    """:class:`RedisStore` with hash-tagged keys, over a ``RedisCluster`` client."""

    failures = COMMAND_FAILED
    unreachable = "the subscription store (Redis Cluster) is unreachable"

    def __init__(self, client: RedisCluster, *, prefix: str) -> None:
        super().__init__(client, prefix=prefix)  # type: ignore[arg-type]

    def session_key(self, session_id: str, client_id: str) -> str:
        return f"{tagged(self._prefix, 'session', client_id)}:{session_id}"

    def client_key(self, client_id: str) -> str:
        return tagged(self._prefix, "client", client_id)

    def presence_key(self, channel: str) -> str:
        return tagged(self._prefix, "presence", channel)


def _show(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


class _ShardLink:
    """One pub/sub connection to one shard primary, for the channels in its slots.

    Only this link's writer task writes to the socket (so a caller that is cancelled
    can never leave half a command behind), and every command sent is remembered in
    order: Redis answers in order, so each reply is matched with its command, and an
    ``sunsubscribe`` that matches nothing we sent is the shard giving a slot away.
    """

    def __init__(self, broker: ClusterBroker, addr: Addr) -> None:
        self.broker = broker
        self.addr = addr
        self.wires: set[bytes] = set()
        self.confirmed: set[bytes] = set()
        self.live = False
        self.down = False
        self._was_live = False
        self._outbox: list[tuple[bytes, list[bytes]]] = []
        self._wake = asyncio.Event()
        self._sent: deque[tuple[bytes, list[bytes]]] = deque()
        self.task = asyncio.create_task(self._run(), name=f"quart-chat shard {_show(addr)}")

    def add(self, wire: bytes) -> None:
        self.wires.add(wire)
        if self.live:
            self._send(verbs(wire)[0], [wire])

    def remove(self, wire: bytes, *, quiet: bool = False) -> None:
        """Stop ``wire`` here; ``quiet`` when the shard no longer has it anyway."""
        self.wires.discard(wire)
        was_confirmed = wire in self.confirmed
        self.confirmed.discard(wire)
        if self.live and (was_confirmed or not quiet):
            self._send(verbs(wire)[1], [wire])

    def _send(self, command: bytes, wires: list[bytes]) -> None:
        self._outbox.append((command, wires))
        self._wake.set()

    # -- the connection ------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while self.wires:
            self._was_live = False
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except (*CLUSTER_DOWN, PubSubStalled) as exc:
                if not self.down:
                    log.warning("cluster: pub/sub to %s lost (%s: %s); recovering",
                                _show(self.addr), type(exc).__name__, exc)
            except Exception:
                log.exception("cluster: pub/sub to %s failed; recovering", _show(self.addr))
            if self._was_live:
                delay = BACKOFF_FIRST  # it was up: start the backoff again from the bottom
            self.down = True
            self.broker._link_failed(self)
            # A failover moves the shard's slots to a promoted replica: find out where.
            if await self.broker._refresh_map(avoid=self.addr):
                self.broker._relocate(self)
            if not self.wires:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        self.broker._close_if_idle(self)

    async def _serve(self) -> None:
        """One connection's life: subscribe everything, then read until it fails."""
        conn = self.broker.connection(self.addr)
        tasks: list[asyncio.Task[None]] = []
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            self._outbox.clear()
            self._sent.clear()
            # One SSUBSCRIBE names channels of one slot; classic ones go apart.
            batches: dict[tuple[int, bytes], list[bytes]] = {}
            for wire in sorted(self.wires):
                batches.setdefault((key_slot(wire), verbs(wire)[0]), []).append(wire)
            for (_, command), wires in batches.items():
                self._send(command, wires)
            if self.down:
                self.broker.reconnects += 1
                log.info("cluster: pub/sub to %s restored; %d channels",
                         _show(self.addr), len(self.wires))
            self.live, self.down, self._was_live = True, False, True
            tasks = [
                asyncio.create_task(self._write(conn), name=f"{self.task.get_name()} writer"),
                asyncio.create_task(self._read(conn), name=f"{self.task.get_name()} reader"),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise PubSubStalled("pub/sub loop ended")
        finally:
            self.live = False
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await conn.disconnect(nowait=True)

    async def _write(self, conn: Connection) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outbox = self._outbox, []
            self._sent.extend(batch)
            await conn.send_packed_command(
                conn.pack_commands([(command, *wires) for command, wires in batch]),
                check_health=False,
            )

    async def _read(self, conn: Connection) -> None:
        interval = self.broker.probe_interval
        probes = ProbeCount(interval, where=f" by {_show(self.addr)}")
        while True:
            try:
                reply = await conn.read_response(timeout=interval)
            except ResponseError as exc:
                probes.answered()
                self._refused(exc)
                continue
            if reply is None:
                probes.check()
                probes.sent()
                self._send(b"PING", [])
                continue
            probes.answered()
            if not isinstance(reply, list):  # PONG while no channel is subscribed yet
                self._answered(b"PING", None)
                continue
            kind = reply[0]
            if kind in (b"smessage", b"message"):
                self.broker._deliver_wire(reply[1], reply[2])
            elif kind in (b"ssubscribe", b"subscribe"):
                self._answered(kind.upper(), reply[1])
                if reply[1] in self.wires:
                    self.confirmed.add(reply[1])
                    self.broker._confirmed(reply[1])
            elif kind in (b"sunsubscribe", b"unsubscribe"):
                if not self._answered(kind.upper(), reply[1]) and reply[1] in self.wires:
                    self.confirmed.discard(reply[1])
                    self.broker._revoked(self, reply[1])
            elif kind == b"pong":
                self._answered(b"PING", None)

    def _answered(self, command: bytes, wire: bytes | None) -> bool:
        """Match one reply with the oldest command sent; False if it was not ours."""
        if not self._sent:
            return False
        head_command, wires = self._sent[0]
        if head_command != command or (wire is not None and (not wires or wires[0] != wire)):
            return False
        if wires:
            wires.pop(0)
        if not wires:
            self._sent.popleft()
        return True

    def _refused(self, exc: ResponseError) -> None:
        """A whole command was refused (its slot moved, or the cluster is down)."""
        if not self._sent:
            raise exc
        command, wires = self._sent.popleft()
        if command != b"SSUBSCRIBE":
            return  # a refused SUNSUBSCRIBE: the shard no longer has the channel anyway
        pending = [w for w in wires if w in self.wires and w not in self.confirmed]
        if isinstance(exc, MovedError):
            self.broker.slot_moves += 1
            self.broker._moved(self, pending, exc.slot_id, (exc.host, int(exc.port)))
        else:  # CLUSTERDOWN, TRYAGAIN...: ask again shortly
            log.debug("cluster: %s refused SSUBSCRIBE: %s", _show(self.addr), exc)
            asyncio.get_running_loop().call_later(0.2, self._retry, pending)

    def _retry(self, wires: list[bytes]) -> None:
        again = [w for w in wires if w in self.wires and w not in self.confirmed]
        if again and self.live:
            self._send(b"SSUBSCRIBE", again)
