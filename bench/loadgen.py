"""The load generator: many picows WebSocket clients in one uvloop process.

Each client is a ``picows.WSListener``: frames are handled in a synchronous callback, no
task per client and none per message, so one core can check several hundred thousand
deliveries per second. A thin adapter speaks each server's protocol:

- :class:`JsonAdapter` — quart-chat's JSON protocol v1 (and ``?batch=1``, where a frame
  carries newline-separated JSON documents). The floor and the other JSON peers speak
  the same subset.
- :class:`SocketIOAdapter` — Engine.IO v4 / Socket.IO v5 framing over a raw WebSocket.

Every published text is ``"<publisher>:<seq>:<unix time>"``; each subscriber checks that
it gets every publisher's sequence once and in order (gaps, duplicates and reorders are
counted) and records the end-to-end latency of every delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

_now = time.time


class _Doc(msgspec.Struct):
    """The fields of a server frame the load generator looks at (others are skipped)."""

    type: str = ""
    id: int | str | None = None
    channel: str | None = None
    text: str | None = None


_json_doc = msgspec.json.Decoder(_Doc).decode
_json_encode = msgspec.json.Encoder().encode
_sio_event = msgspec.json.Decoder(tuple[str, _Doc]).decode
_any = msgspec.json.Decoder().decode


class Counters:
    """Delivery bookkeeping shared by all clients of a run (single-threaded)."""

    __slots__ = (
        "errors",
        "frames",
        "last_rx",
        "latencies",
        "missing",
        "received",
        "refusals",
        "refused",
        "replies",
    )

    def __init__(self) -> None:
        self.received = 0
        self.frames = 0  # WebSocket frames received (several documents each with ?batch=1)
        self.missing = 0  # sequence gaps seen
        self.errors = 0  # duplicates or reorders
        self.replies = 0
        self.refused = 0  # error replies (e.g. a publish refused as "unavailable")
        self.refusals: list[str] = []  # the first few, for the report
        self.last_rx = 0.0
        self.latencies: list[float] = []


class Client(WSListener):  # type: ignore[misc]
    """One WebSocket client; ``adapter`` turns frames into calls on this object."""

    def __init__(self, adapter: Any, counters: Counters, name: str) -> None:
        self.adapter = adapter
        self.counters = counters
        self.name = name
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting: dict[int | str, asyncio.Future[Any]] = {}
        self.last_seq: dict[str, int] = {}
        self.closed = False
        self._partial: list[bytes] = []

    # -- picows callbacks ------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.CONTINUATION:
            if frame.fin and not self._partial:
                self.adapter.on_frame(self, frame.get_payload_as_bytes())
            else:
                self._partial.append(frame.get_payload_as_bytes())
                if frame.fin:
                    data = b"".join(self._partial)
                    self._partial.clear()
                    self.adapter.on_frame(self, data)
        elif kind == WSMsgType.CLOSE:
            self.closed = True
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.name}: disconnected"))
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"{self.name}: disconnected"))

    # -- called by adapters ----------------------------------------------------------
    def on_message(self, text: str) -> None:
        c = self.counters
        now = _now()
        publisher, seq_text, sent = text.split(":")
        seq = int(seq_text)
        expected = self.last_seq.get(publisher, -1) + 1
        if seq == expected:
            self.last_seq[publisher] = seq
        elif seq > expected:
            c.missing += seq - expected
            self.last_seq[publisher] = seq
        else:
            c.errors += 1
        c.received += 1
        c.last_rx = now
        c.latencies.append(now - float(sent))

    def on_reply(self, rid: int | str | None, ok: bool, detail: Any) -> None:
        self.counters.replies += 1
        if not ok:
            self.counters.refused += 1
            if len(self.counters.refusals) < 5:
                self.counters.refusals.append(str(detail)[:200])
        waiter = self.waiting.pop(rid, None) if rid is not None else None
        if waiter is not None and not waiter.done():
            if ok:
                waiter.set_result(detail)
            else:
                waiter.set_exception(RuntimeError(f"{self.name}: refused: {detail}"))

    def mark_ready(self, error: Exception | None = None) -> None:
        if not self.ready.done():
            if error is None:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(error)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.send(WSMsgType.TEXT, data)

    async def request(self, rid: int, data: bytes, wait: float = 10.0) -> Any:
        """Send a frame and wait (at most ``wait`` s) for the reply with id ``rid``."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[rid] = waiter
        self.send(data)
        return await asyncio.wait_for(waiter, wait)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(Exception):
                self.transport.send_close()
            self.transport.disconnect(graceful=False)
        self.closed = True


class JsonAdapter:
    """quart-chat protocol v1: ``/ws?client_id=…[&batch=1]``; welcome, result, message."""

    name = "json-v1"

    def __init__(self, batch: bool = False) -> None:
        self.batch = batch

    def url(self, base: str, client_id: str) -> str:
        return f"{base}/ws?client_id={client_id}" + ("&batch=1" if self.batch else "")

    def on_frame(self, client: Client, data: bytes) -> None:
        client.counters.frames += 1
        if self.batch and b"\n" in data:
            for part in data.split(b"\n"):
                self._doc(client, part)
        else:
            self._doc(client, data)

    @staticmethod
    def _doc(client: Client, data: bytes) -> None:
        doc = _json_doc(data)
        kind = doc.type
        if kind == "message":
            client.on_message(doc.text)  # type: ignore[arg-type]
        elif kind == "result":
            client.on_reply(doc.id, True, doc)
        elif kind == "error":
            client.on_reply(doc.id, False, data.decode())
        elif kind == "welcome":
            client.mark_ready()

    def subscribe(self, rid: int, channel: str) -> bytes:
        return _json_encode({"type": "subscribe", "channel": channel, "id": rid})

    def publish(self, rid: int, channel: str, text: str) -> bytes:
        return _json_encode({"type": "publish", "channel": channel, "text": text, "id": rid})


class SocketIOAdapter:
    """Engine.IO 4 / Socket.IO 5 over a raw WebSocket (no HTTP long-polling)."""

    name = "socket.io"
    batch = False

    def url(self, base: str, client_id: str) -> str:
        return f"{base}/socket.io/?EIO=4&transport=websocket&client_id={client_id}"

    def on_frame(self, client: Client, data: bytes) -> None:
        client.counters.frames += 1
        head = data[:2]
        if head == b"42":  # event
            body = data[2:]
            if body[:1] != b"[":  # an event with an ack id: not sent by the peer
                body = body[body.index(b"[") :]
            name, doc = _sio_event(body)
            if name == "message":
                client.on_message(doc.text)  # type: ignore[arg-type]
        elif head == b"43":  # ack: 43<id>[result]
            bracket = data.index(b"[")
            rid = int(data[2:bracket])
            client.on_reply(rid, True, _any(data[bracket:]))
        elif data[:1] == b"2":  # Engine.IO ping
            client.send(b"3")
        elif head == b"40":
            client.mark_ready()
        elif data[:1] == b"0":  # Engine.IO open: connect to the default namespace
            client.send(b"40")
        elif head == b"44":
            client.mark_ready(ConnectionError(data.decode()))

    def subscribe(self, rid: int, channel: str) -> bytes:
        return b"42%d" % rid + _json_encode(["subscribe", {"channel": channel}])

    def publish(self, rid: int, channel: str, text: str) -> bytes:
        return b"42%d" % rid + _json_encode(["publish", {"channel": channel, "text": text}])


ADAPTERS: dict[str, Callable[[], Any]] = {
    "json": JsonAdapter,
    "json-batch": lambda: JsonAdapter(batch=True),
    "socketio": SocketIOAdapter,
}


@dataclass
class StepResult:
    """One measured load step."""

    offered: float  # publishes per second asked for
    published: int
    expected: int
    received: int
    missing: int
    errors: int
    seconds: float
    delivered_rate: float
    p50: float
    p99: float
    max: float
    client_cpu: float  # fraction of one core the load generator used
    server_cpu: float  # server CPU seconds used during the step
    disconnected: int
    frames: int = 0  # WebSocket frames received in the step
    refused: int = 0  # requests the server answered with an error
    refusals: list[str] = field(default_factory=list)

    @property
    def loss(self) -> int:
        return max(self.expected - self.received, 0) + self.missing

    @property
    def clean(self) -> bool:
        return self.loss == 0 and self.errors == 0 and self.disconnected == 0


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    import numpy as np

    array = np.asarray(values)
    p50, p99 = np.percentile(array, [50, 99])
    return float(p50), float(p99), float(array.max())


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadGen:
    """Owns the clients of one server under test."""

    def __init__(self, base_url: str, adapter: Any, server_cpu: Callable[[], float]) -> None:
        self.base_url = base_url
        self.adapter = adapter
        self.server_cpu = server_cpu
        self.counters = Counters()
        self.clients: list[Client] = []
        self._ids = itertools.count(1)
        self._names = itertools.count()

    async def connect(self, n: int, channel_of: Callable[[int], str], *,
                      concurrency: int = 64, deadline: float = 120.0) -> list[Client]:
        """Open ``n`` clients, each subscribed to ``channel_of(i)``; bounded in time."""
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> Client:
            async with sem:
                return await self._open(channel_of(i))

        clients = list(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))),
                                              deadline))
        self.clients.extend(clients)
        return clients

    async def storm(self, n: int, channel_of: Callable[[int], str], *,
                    deadline: float = 120.0) -> tuple[list[Client], list[str]]:
        """Open ``n`` clients all at once, each subscribed to ``channel_of(i)``: the
        clients subscribed, and why each of the others failed (refused, closed, timed
        out, or still pending at ``deadline``)."""
        tasks = [asyncio.ensure_future(self._open(channel_of(i))) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        clients = [t.result() for t in tasks if t in done and t.exception() is None]
        failures = [f"{type(exc).__name__}: {exc}"[:200] for t in tasks if t in done
                    and (exc := t.exception()) is not None]
        failures += [f"not subscribed after {deadline:.0f}s"] * len(pending)
        self.clients.extend(clients)
        return clients, failures

    async def _open(self, channel: str) -> Client:
        """One client: WebSocket handshake, welcome, then subscribed to ``channel``."""
        name = f"c{next(self._names)}"
        adapter, counters = self.adapter, self.counters
        _, client = await ws_connect(
            lambda: Client(adapter, counters, name),
            self.adapter.url(self.base_url, name),
            websocket_handshake_timeout=60,
        )
        try:
            await asyncio.wait_for(client.ready, 60)
            rid = next(self._ids)
            await client.request(rid, self.adapter.subscribe(rid, channel), 60)
        except BaseException:
            client.close()
            raise
        return client

    async def close_all(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        await asyncio.sleep(0.3)

    async def step(self, publishers: Sequence[tuple[Client, str]], rate: float, seconds: float,
                   fanout: int, *, drain: float = 5.0, max_count: int = 2_000_000) -> StepResult:
        """Publish at ``rate``/s round-robin over ``publishers`` for ``seconds``, then wait
        (at most ``drain`` s) until every expected delivery arrived."""
        c = self.counters
        received0, missing0, errors0, frames0 = c.received, c.missing, c.errors, c.frames
        refused0 = c.refused
        c.latencies = []
        closed0 = sum(cl.closed for cl in self.clients)
        seqs: dict[str, int] = getattr(self, "_seqs", {})
        self._seqs = seqs
        cpu0, scpu0 = cpu_self(), self.server_cpu()
        adapter = self.adapter
        t0, t0_wall = time.monotonic(), _now()
        sent = 0
        order = itertools.cycle(publishers)
        limit = min(max_count, int(rate * seconds) + 1)
        while sent < limit:
            elapsed = time.monotonic() - t0
            if elapsed >= seconds:
                break
            due = min(int(rate * elapsed) + 1, limit)
            while sent < due:
                client, channel = next(order)
                pub = client.name
                seq = seqs.get(pub, -1) + 1
                seqs[pub] = seq
                rid = next(self._ids)
                client.send(adapter.publish(rid, channel, f"{pub}:{seq}:{_now():.6f}"))
                sent += 1
            await asyncio.sleep(0.002)
        expected = sent * fanout
        end = time.monotonic() + drain
        last, stalled_since = -1, time.monotonic()
        while c.received - received0 < expected and time.monotonic() < end:
            await asyncio.sleep(0.01)
            if c.received != last:
                last, stalled_since = c.received, time.monotonic()
            elif time.monotonic() - stalled_since > 1.5:
                break  # nothing arrives any more: what is missing is lost
        wall = max(time.monotonic() - t0, 1e-9)
        cpu1, scpu1 = cpu_self(), self.server_cpu()
        received = c.received - received0
        # Delivered rate: deliveries over the time from the first publish to the last
        # delivery, so a server that falls behind is charged for its backlog.
        span = max(c.last_rx - t0_wall, seconds)
        p50, p99, worst = percentiles(c.latencies)
        c.latencies = []
        return StepResult(
            offered=rate, published=sent, expected=expected, received=received,
            missing=c.missing - missing0, errors=c.errors - errors0, seconds=wall,
            delivered_rate=received / span if received else 0.0, p50=p50, p99=p99, max=worst,
            client_cpu=(cpu1 - cpu0) / wall, server_cpu=scpu1 - scpu0,
            disconnected=sum(cl.closed for cl in self.clients) - closed0,
            frames=c.frames - frames0, refused=c.refused - refused0,
            refusals=list(c.refusals),
        )


@dataclass
class Timing:
    """How long each phase runs; ``smoke`` makes everything take seconds."""

    step_seconds: float = 2.0
    light_seconds: float = 6.0  # three runs of 2 s
    rooms_seconds: float = 5.0
    scale_seconds: float = 5.0
    fanout_subscribers: int = 500
    fanout_publishers: int = 10  # of the subscribers, these publish (round-robin)
    fanout_start: float = 20.0  # publishes/s at the first step (x subscribers)
    fanout_max_steps: int = 18
    light_subscribers: int = 100
    rooms_clients: int = 1000
    memory_clients: tuple[int, ...] = (2000, 10000)
    handshake_clients: int = 1000
    storm_clients: tuple[int, ...] = (2000, 10000)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def smoke(cls) -> Timing:
        return cls(step_seconds=0.5, light_seconds=0.9, rooms_seconds=0.5, scale_seconds=0.5,
                   fanout_subscribers=20, fanout_start=20.0, fanout_max_steps=2,
                   light_subscribers=10, rooms_clients=20, memory_clients=(40,),
                   handshake_clients=20, storm_clients=(40,))
