"""Every reach into Quart's and hypercorn's internals, so an upgrade has one file to check.

Each reach degrades to the public API (or to doing nothing) when the internals change:

- :func:`text_sender`: write frames straight to the ASGI ``send``, skipping Quart's
  per-frame wrapper.
- :func:`inbound_backlog`: the length of Quart's unbounded queue of received frames.
- :func:`real_websocket`: the websocket object behind Quart's context-local proxy.
- :func:`install` / :func:`activity_of`: dead-peer detection, below.

Dead-peer detection: when did this socket last send us anything, pongs included?
hypercorn sends WebSocket pings (``websocket_ping_interval``) but answers the pongs
inside wsproto and never tells the application, so a peer that vanished without a FIN
(a dead laptop, a black-holed NAT) or a frozen client would keep its session for the
TCP timeout — minutes to hours. :func:`install` wraps hypercorn's ``WSStream.handle``
to stamp the time of every inbound data chunk (frames, pongs, close) into the ASGI
scope, where :class:`~quart_chat.session.Session` reads it. It also makes hypercorn's
ping loop stop as soon as the socket closes (hypercorn's sleeps a full interval first,
which would hold graceful shutdown for that long).

If hypercorn's internals ever change shape, :func:`install` returns False and sessions
do no dead-peer detection at all (rather than close idle clients that cannot prove they
are alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quart.wrappers import Websocket

SCOPE_KEY = "quart_chat.activity"

_installed: bool | None = None


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


def install() -> bool:
    """Patch hypercorn once (idempotent); True when transport activity is tracked."""
    global _installed
    if _installed is not None:
        return _installed
    try:
        from hypercorn.protocol.events import Request, StreamClosed
        from hypercorn.protocol.ws_stream import WSStream
        from wsproto.events import Ping
    except ImportError:  # pragma: no cover - a hypercorn without these modules
        _installed = False
        return False
    if not all(hasattr(WSStream, name) for name in ("handle", "app_send", "_send_pings")):
        _installed = False  # pragma: no cover
        return False
    original = WSStream.handle
    original_app_send = WSStream.app_send

    async def handle(self: Any, event: Any) -> None:
        activity = self.__dict__.get("_quart_chat_activity")
        if activity is None:
            activity = self._quart_chat_activity = Activity(self)
        else:
            activity.last = time.monotonic()
        await original(self, event)
        if isinstance(event, StreamClosed):
            _stopped(self).set()
        elif isinstance(event, Request):
            # The scope is built inside handle(); sessions look the stamp up lazily.
            scope = getattr(self, "scope", None)
            if isinstance(scope, dict):
                scope.setdefault("extensions", {})[SCOPE_KEY] = activity

    async def app_send(self: Any, message: Any) -> None:
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
    _installed = True
    return True


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


def inbound_backlog(websocket: Websocket) -> Callable[[], int]:
    """Quart queues inbound frames without limit while a handler awaits; this reads the
    length of that queue so a flooding client can be closed (0 if Quart changes)."""
    queue = getattr(getattr(websocket, "_receive", None), "__self__", None)
    return queue.qsize if isinstance(queue, asyncio.Queue) else (lambda: 0)


def real_websocket(proxy: Websocket) -> Websocket:
    """The object behind Quart's ``websocket`` context-local proxy, for a session that
    outlives the handler's context lookups."""
    return proxy._get_current_object()  # type: ignore[attr-defined,no-any-return]
