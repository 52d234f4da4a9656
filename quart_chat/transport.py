"""Every reach into Quart's and hypercorn's internals, so an upgrade has one file to check.

Each reach degrades to the public API (or to doing nothing) when the internals change:

- :class:`PacedWebsocket`: Quart's ASGI WebSocket handler without its read-ahead, so
  inbound frames are read only when the session asks for the next one.
- :func:`text_sender`: write frames straight to the ASGI ``send``, skipping Quart's
  per-frame wrapper.
- :func:`real_websocket`: the websocket object behind Quart's context-local proxy.
- :func:`install` / :func:`activity_of`: hypercorn's WebSocket stream, guarded and
  watched (below).

Pacing. Quart reads every inbound frame into an unbounded queue as soon as the server
hands it over, so a client that sends without waiting grows server memory until
something caps it. :class:`PacedWebsocket` reads the next frame only inside the
session's ``receive()``: unread frames wait in the server's bounded queue (hypercorn:
``max_app_queue_size``; uvicorn pauses reading after each message) and in the kernel's
buffers, and TCP slows the client down, as any TCP program would.

hypercorn's stream (:func:`install` wraps ``WSStream``) gets, per connection:

- limits checked where the bytes are read: a message over ``4 x max_frame_bytes`` closes
  with 1009, a message in more than ``max_message_fragments`` frames, or more than
  ``transport_frame_rate`` frames or ``transport_byte_rate`` bytes a second, with 1008.
  Then the connection is dropped: hypercorn 0.18 would otherwise go on reading (and
  buffering) whatever the client keeps sending after its 1009;
- a close frame for what wsproto cannot parse (1007 invalid UTF-8, 1002 protocol error)
  before the connection is dropped (hypercorn drops it silently);
- the real close code in the app's ``websocket.disconnect`` (the client's own code, or
  the one above) instead of hypercorn's 1006 for every client-initiated close;
- a queue to the app that never blocks once the app is gone (with pacing, the app may
  stop reading with that queue full, which would hold the read loop forever);
- dead-peer detection: hypercorn sends WebSocket pings (``websocket_ping_interval``) but
  answers the pongs inside wsproto and never tells the application, so a peer that
  vanished without a FIN would keep its session for the TCP timeout. The stream stamps
  the time of every inbound chunk into an :class:`Activity` in the ASGI scope, where
  :class:`~quart_chat.session.Session` reads it; hypercorn's ping loop also stops as
  soon as the socket closes (it sleeps a full interval first, holding graceful shutdown).

uvicorn and granian answer pings themselves (uvicorn also sends them and closes peers
that do not answer, ``--ws-ping-interval``/``--ws-ping-timeout``); they get pacing, but
not the stream guard, whose limits are then the server's own (``docs/deploying.md``).
If hypercorn's internals ever change shape, :func:`install` leaves hypercorn alone and
sessions do no dead-peer detection (rather than close clients that cannot prove they
are alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from quart.asgi import ASGIWebsocketConnection

from .limits import TokenBucket

if TYPE_CHECKING:
    from quart import Quart
    from quart.wrappers import Websocket

    from .config import Settings

SCOPE_KEY = "quart_chat.activity"
#: Where :func:`install` keeps an app's :class:`InboundLimits` (``app.extensions``).
LIMITS_KEY = "quart_chat.transport"
#: Close codes the stream guard sends.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
#: What the app is told when the peer left without a close frame.
CLOSE_ABNORMAL = 1006

#: WebSocket frames one connection's read may handle before it yields the event loop.
EVENTS_PER_TURN = 16

_patched: bool | None = None


class Disconnected(Exception):
    """The peer's side of the socket ended; ``code`` is its close code (1006: vanished)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class InboundLimits:
    """What one connection may send, checked by hypercorn's stream as it reads."""

    #: Longest message (characters of text, bytes of binary); beyond: 1009.
    max_message: int
    #: Most frames one message may be split into; beyond: 1008.
    max_fragments: int
    #: WebSocket frames (fragments, pings and pongs included) per second; burst 2x.
    frame_rate: float
    #: Bytes per second; the burst is twice that (at least two largest messages).
    byte_rate: float

    @classmethod
    def of(cls, settings: Settings) -> InboundLimits:
        """The limits ``settings`` give (the message limit: 4 x ``max_frame_bytes``)."""
        return cls(max_message=4 * settings.max_frame_bytes,
                   max_fragments=settings.max_message_fragments,
                   frame_rate=settings.transport_frame_rate,
                   byte_rate=settings.transport_byte_rate)


class PacedWebsocket(ASGIWebsocketConnection):
    """Quart's ASGI WebSocket handler, reading a frame only when the handler asks.

    Quart runs a task that moves every ASGI ``websocket.receive`` into an unbounded queue
    and cancels the handler on ``websocket.disconnect``. Here ``websocket.receive()``
    reads the ASGI ``receive`` itself, and a disconnect raises :class:`Disconnected`
    from it (Quart's ``websocket_received`` signal is not sent; quart-chat does not use
    it).
    """

    async def __call__(self, receive: Any, send: Any) -> None:
        self._asgi_receive = receive
        await self.handle_websocket(self._create_websocket_from_scope(send), send)

    def _create_websocket_from_scope(self, send: Any) -> Websocket:
        websocket = super()._create_websocket_from_scope(send)
        websocket._receive = self._next_frame
        return websocket

    async def _next_frame(self) -> str | bytes:
        while True:
            event = await self._asgi_receive()
            kind = event["type"]
            if kind == "websocket.receive":
                data: str | bytes = event.get("bytes") or event.get("text") or ""
                return data
            if kind == "websocket.disconnect":
                raise Disconnected(int(event.get("code") or 1005), event.get("reason") or "")


def install(app: Quart, settings: Settings) -> bool:
    """Pace ``app``'s WebSockets and guard hypercorn's stream with ``settings``' limits.

    True when hypercorn's stream is patched (transport activity is tracked).
    """
    app.asgi_websocket_class = PacedWebsocket
    app.extensions[LIMITS_KEY] = InboundLimits.of(settings)
    return _patch_hypercorn()


class Activity:
    """Monotonic time of the last bytes received from one socket, and a way to ping it."""

    __slots__ = ("last", "stream")

    def __init__(self, stream: Any) -> None:
        self.last = time.monotonic()
        self.stream = stream

    @property
    def hypercorn_pings(self) -> bool:
        """True when hypercorn itself pings this socket (``websocket_ping_interval``)."""
        return getattr(self.stream.config, "websocket_ping_interval", None) is not None

    async def ping(self) -> None:
        """Send a WebSocket ping now (for servers run without ``websocket_ping_interval``,
        e.g. plain ``hypercorn "quart_chat:create_app()"``)."""
        from wsproto.events import Ping

        if not self.stream.closed:
            await self.stream._send_wsproto_event(Ping())


class _Guard:
    """One hypercorn stream's inbound accounting, and how it ended."""

    __slots__ = ("app_gone", "bytes", "fragments", "frames", "limits", "queue", "reason")

    def __init__(self, limits: InboundLimits) -> None:
        self.limits = limits
        self.frames = TokenBucket(limits.frame_rate, 2 * limits.frame_rate)
        self.bytes = TokenBucket(limits.byte_rate,
                                 max(2 * limits.byte_rate, 2 * 4 * limits.max_message))
        self.fragments = 0
        #: (code, reason) the app is told on disconnect; None: hypercorn's own.
        self.reason: tuple[int, str] | None = None
        #: True once the app has finished: nothing reads its queue any more.
        self.app_gone = False
        self.queue: asyncio.Queue[Any] | None = None


def _limits_of(asgi_app: Any) -> InboundLimits:
    """The limits :func:`install` stored on the Quart app hypercorn serves (defaults for
    any other app in the same process)."""
    app = getattr(asgi_app, "app", asgi_app)
    found = getattr(app, "extensions", {}).get(LIMITS_KEY)
    if isinstance(found, InboundLimits):
        return found
    from .config import Settings

    return InboundLimits.of(Settings())


def _patch_hypercorn() -> bool:
    """Wrap hypercorn's ``WSStream`` once (idempotent); False if its shape changed."""
    global _patched
    if _patched is not None:
        return _patched
    try:
        from hypercorn.protocol.events import Data, Request, StreamClosed
        from hypercorn.protocol.ws_stream import ASGIWebsocketState, FrameTooLargeError, WSStream
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection, Message, Ping
    except ImportError:  # pragma: no cover - a hypercorn without these modules
        _patched = False
        return False
    needed = ("handle", "app_send", "_send_pings", "_handle_events", "_send_wsproto_event")
    if not all(hasattr(WSStream, name) for name in needed):
        _patched = False  # pragma: no cover
        return False
    original_handle = WSStream.handle
    original_app_send = WSStream.app_send
    closed_states = {ASGIWebsocketState.CLOSED, ASGIWebsocketState.HTTPCLOSED}

    async def drop(self: Any, code: int, reason: str) -> None:
        """Close with ``code`` and drop the connection: nothing more is read."""
        guard: _Guard = self._quart_chat_guard
        guard.reason = (code, reason)
        self.buffer.clear()
        await self._send_wsproto_event(CloseConnection(code=code, reason=reason))
        await self.send(StreamClosed(stream_id=self.stream_id))

    async def handle(self: Any, event: Any) -> None:
        activity = self.__dict__.get("_quart_chat_activity")
        if activity is None:
            activity = self._quart_chat_activity = Activity(self)
            self._quart_chat_guard = _Guard(_limits_of(self.app))
        else:
            activity.last = time.monotonic()
        guard: _Guard = self._quart_chat_guard
        if isinstance(event, StreamClosed):
            _stopped(self).set()
            if self.closed:
                return
            self.closed = True
            if self.app_put is not None:
                code, reason = guard.reason or (
                    1000 if self.state in closed_states else CLOSE_ABNORMAL, "")
                await self.app_put({"type": "websocket.disconnect", "code": code,
                                    "reason": reason})
            return
        if (isinstance(event, Data) and not self.closed
                and not guard.bytes.take(len(event.data))):
            await drop(self, CLOSE_POLICY,
                       f"more than {guard.limits.byte_rate:g} bytes per second")
            return
        await original_handle(self, event)
        if isinstance(event, Request) and self.app_put is not None:
            self.buffer.max_length = min(self.buffer.max_length, guard.limits.max_message)
            queue = getattr(self.app_put, "__self__", None)
            guard.queue = queue if isinstance(queue, asyncio.Queue) else None
            self.app_put = functools.partial(_put_unless_gone, self.app_put, guard)
            # Sessions look the stamp up in the scope (built inside handle()).
            scope = getattr(self, "scope", None)
            if isinstance(scope, dict):
                scope.setdefault("extensions", {})[SCOPE_KEY] = activity

    async def handle_events(self: Any) -> None:
        guard: _Guard = self._quart_chat_guard
        unanswered: Ping | None = None
        for count, event in enumerate(self.connection.events(), 1):
            if count % EVENTS_PER_TURN == 0:
                # One read can hold thousands of tiny frames: answer the latest ping
                # (RFC 6455 5.5.3 allows skipping older ones) and let the other
                # connections have the loop in between.
                if unanswered is not None:
                    await self._send_wsproto_event(unanswered.response())
                    unanswered = None
                await self.context.sleep(0)
            if self.closed:
                return
            if isinstance(event, Ping):
                unanswered = event
            if not await inbound(self, guard, event):
                return
        if unanswered is not None:
            await self._send_wsproto_event(unanswered.response())

    async def inbound(self: Any, guard: _Guard, event: Any) -> bool:
        """Apply the limits to one wsproto event and pass messages to the app; False once
        the stream is closed."""
        limits = guard.limits
        if not guard.frames.take():
            await drop(self, CLOSE_POLICY, f"more than {limits.frame_rate:g} frames per second")
            return False
        if isinstance(event, Message):
            guard.fragments += 1
            if guard.fragments > limits.max_fragments:
                await drop(self, CLOSE_POLICY,
                           f"a message in more than {limits.max_fragments} fragments")
                return False
            try:
                self.buffer.extend(event)
            except FrameTooLargeError:
                await drop(self, CLOSE_TOO_BIG, f"message larger than {self.buffer.max_length}")
                return False
            if event.message_finished:
                guard.fragments = 0
                await self.app_put(self.buffer.to_message())
                self.buffer.clear()
        elif isinstance(event, CloseConnection):
            state = self.connection.state
            if state == ConnectionState.REMOTE_CLOSING:  # the client closes: answer
                guard.reason = (event.code, event.reason or "")
                await self._send_wsproto_event(event.response())
            elif state != ConnectionState.CLOSED:  # wsproto could not parse: 1002/1007
                await drop(self, event.code, event.reason or "protocol error")
                return False
            await self.send(StreamClosed(stream_id=self.stream_id))
            return False
        return True

    async def app_send(self: Any, message: Any) -> None:
        if message is None:
            _app_gone(self)
        await original_app_send(self, message)
        if message is None or message.get("type") == "websocket.close":
            _stopped(self).set()

    async def send_pings(self: Any) -> None:
        # hypercorn's own loop sleeps a whole interval before it sees the socket closed,
        # which holds graceful shutdown for up to that long; wake up on close instead.
        stopped = _stopped(self)
        while not self.closed and not stopped.is_set():
            await self._send_wsproto_event(Ping())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), self.config.websocket_ping_interval)

    WSStream.handle = handle  # type: ignore[method-assign]
    WSStream.app_send = app_send  # type: ignore[method-assign]
    WSStream._send_pings = send_pings  # type: ignore[method-assign]
    WSStream._handle_events = handle_events  # type: ignore[method-assign]
    _patched = True
    return True


async def _put_unless_gone(put: Callable[[Any], Awaitable[None]], guard: _Guard,
                           message: Any) -> None:
    """hypercorn's put into the app's queue, a no-op once the app has finished."""
    if not guard.app_gone:
        await put(message)


def _app_gone(stream: Any) -> None:
    """The app finished: empty its queue so a read loop blocked on a full queue moves on."""
    guard: _Guard | None = stream.__dict__.get("_quart_chat_guard")
    if guard is None:
        return
    guard.app_gone = True
    if guard.queue is not None:
        while not guard.queue.empty():
            guard.queue.get_nowait()


def _stopped(stream: Any) -> asyncio.Event:
    event = stream.__dict__.get("_quart_chat_stopped")
    if event is None:
        event = stream._quart_chat_stopped = asyncio.Event()
    return event  # type: ignore[no-any-return]


def activity_of(websocket: Any) -> Activity | None:
    """The :class:`Activity` hypercorn stamps for this socket, if :func:`install` ran."""
    scope = getattr(websocket, "scope", None) or {}
    found = (scope.get("extensions") or {}).get(SCOPE_KEY)
    return found if isinstance(found, Activity) else None


def text_sender(websocket: Any) -> Callable[[str], Awaitable[None]] | None:
    """The ASGI ``send`` behind Quart's ``websocket.send``, as a text-frame writer.

    Quart's ``websocket.send`` adds an ``asyncio.sleep(0)``, an accept check and a
    blinker signal to every frame, which costs more than the rest of our per-delivery
    work. Quart builds ``websocket._send`` as ``partial(ASGIWebsocketConnection.send_data,
    asgi_send)``; when it is exactly that, frames can skip Quart's wrapper (and its
    ``websocket_sent`` signal, which quart-chat does not use). Anything else (a future
    Quart, a test double) returns None and the public ``websocket.send`` is used.
    """
    wrapped = getattr(websocket, "_send", None)
    if not (isinstance(wrapped, functools.partial) and len(wrapped.args) == 1
            and not wrapped.keywords and getattr(wrapped.func, "__name__", "") == "send_data"):
        return None
    asgi_send = wrapped.args[0]

    def send_text(frame: str) -> Awaitable[None]:
        return asgi_send({"type": "websocket.send", "bytes": None, "text": frame})  # type: ignore[no-any-return]

    return send_text


def real_websocket(proxy: Websocket) -> Websocket:
    """The object behind Quart's ``websocket`` context-local proxy, for a session that
    outlives the handler's context lookups."""
    return proxy._get_current_object()  # type: ignore[attr-defined,no-any-return]
