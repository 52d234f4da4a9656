"""One WebSocket: an inbound loop, the only writer (outbound loop), its channels and limits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from . import __version__, liveness, logs, metrics, protocol
from .errors import (
    AlreadySubscribed,
    BadFrame,
    ChatError,
    Forbidden,
    HistoryUnavailable,
    InternalError,
    NotSubscribed,
    RateLimited,
    TooLarge,
    Unavailable,
)
from .limits import TokenBucket
from .protocol import (
    Call,
    Channels,
    ClientFrame,
    FrameError,
    History,
    Message,
    Ping,
    Presence,
    Publish,
    Subscribe,
    Unsubscribe,
    check_channel,
    check_method,
)

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from .service import ChatService

log = logging.getLogger("quart_chat.session")

#: Errors that count towards closing an abusive client (see ``max_bad_frames``).
ABUSE_CODES = frozenset({"bad_frame", "unknown_type", "too_large", "rate_limited"})
#: Most frames one coalesced WebSocket frame may carry (``?batch=1``).
MAX_BATCH = 256
#: Seconds allowed for the close frame to reach a client that may not be reading.
CLOSE_TIMEOUT = 1.0
#: Seconds of clock difference between server processes tolerated when a live frame's
#: ``mid`` time tells whether a recovery's late frames can still come (see _recover).
REPLAY_CLOCK_SLACK = 2.0
#: Frames the send loop may write back to back before it yields to the event loop.
SEND_BURST = 64
#: Most event-loop turns a coalescing (``?batch=1``) sender waits for more frames.
COALESCE_TURNS = 8
#: Most ``call`` frames one session may have running at once; one more is answered
#: ``rate_limited``. Each runs in its own task, so this bounds what a client can start.
MAX_CALLS_IN_FLIGHT = 16

_ANSWERED = object()  # a handler that queued its own result frame returns this
_DEFERRED = object()  # a handler whose task will answer later (a ``call``) returns this


def _inbound_backlog(websocket: Websocket) -> Callable[[], int]:
    """Quart queues inbound frames without limit while a handler awaits; this reads the
    length of that queue so a flooding client can be closed (0 if Quart changes)."""
    queue = getattr(getattr(websocket, "_receive", None), "__self__", None)
    return queue.qsize if isinstance(queue, asyncio.Queue) else (lambda: 0)


class Session:
    """A connected client. ``client_id`` and ``id`` are public for plugins."""

    def __init__(
        self, service: ChatService, websocket: Websocket, client_id: str, *, batch: bool = False
    ) -> None:
        settings = service.settings
        self.id = secrets.token_hex(8)
        self.client_id = client_id
        self.batch = batch
        self.channels: set[str] = set()
        self.connected_at = time.time()
        #: Why the session ended (a WebSocket close code); None while it runs.
        self.close_code: int | None = None
        self.close_reason = ""
        #: Set once the session has left every channel and run its hooks.
        self.finished = asyncio.Event()
        #: True when the session ended without removing its store records (Redis was
        #: unreachable, or the server is stopping and removes them in bulk): the node
        #: presence sweeps them (quart_chat.presence).
        self.records_left = False
        self._service = service
        self._settings = settings
        self._websocket = websocket
        # The outbound queue: a plain list the send loop swaps out whole, and the future
        # it sleeps on when the list is empty. Cheaper per delivery and per idle session
        # than an asyncio.Queue (three deques and an Event each).
        self._outbox: list[str] = []
        self._outbox_limit = settings.outbound_queue
        self._wakeup: asyncio.Future[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._publishes = TokenBucket(settings.publish_rate, settings.publish_burst)
        self._abuse = TokenBucket(settings.max_bad_frames / 10, settings.max_bad_frames)
        self._frames = TokenBucket(settings.frame_rate, 2 * settings.frame_rate)
        #: Claims of the client's token (None in development mode or via ``authenticate``).
        self.claims: dict[str, Any] | None = None
        #: Channel patterns the token's ``channels`` claim allows; None means no limit.
        self.allowed_channels: tuple[str, ...] | None = None
        self._last_frame = time.monotonic()
        # channel -> live frames held back while missed messages are recovered
        self._held: dict[str, list[tuple[str | None, str]]] = {}
        #: channel -> (mids replayed by a recovery whose live frames have not come yet,
        #: the mid prefix past which they cannot come any more); see _recover.
        self._replayed: dict[str, tuple[set[str], str]] = {}
        #: Running ``call`` tasks (at most MAX_CALLS_IN_FLIGHT); cancelled when it ends.
        self._calls: set[asyncio.Task[None]] = set()
        self._handlers: dict[type[ClientFrame], Callable[[Any], Awaitable[Any]]] = {
            Subscribe: self._subscribe,
            Unsubscribe: self._unsubscribe,
            Publish: self._publish,
            Channels: self._channels,
            Presence: self._presence,
            History: self._history,
            Ping: self._ping,
            Call: self._call,
        }

    def __repr__(self) -> str:
        return f"<Session {self.id} client_id={self.client_id!r}>"

    # -- called by the hub and the service (never awaits) -------------------------------

    def deliver(self, frame: str) -> None:
        """Queue one frame; a full queue means the client stopped reading: close it."""
        if self._held and self._hold(frame):
            return
        if self._replayed and self._replayed_already(frame):
            return
        outbox = self._outbox
        if len(outbox) >= self._outbox_limit:
            if self.close_code is None:
                metrics.slow_consumer()
            self.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full")
            return
        outbox.append(frame)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    @property
    def queue_depth(self) -> int:
        """Frames waiting to be written to this socket."""
        return len(self._outbox)

    def close(self, code: int, reason: str) -> None:
        """Ask the session to end with ``code``; the first reason given wins."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            if self._closing is not None and not self._closing.done():
                self._closing.set_result(None)

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until the client leaves or the session is closed."""
        service = self._service
        await self._websocket.accept()
        self.deliver(protocol.encode(self._welcome()))
        service.sessions.add(self)
        metrics.session_opened()
        logs.connected(self)
        self._closing = closing = asyncio.get_running_loop().create_future()
        if self.close_code is not None:
            closing.set_result(None)
        tasks: list[asyncio.Future[Any]] = [
            asyncio.create_task(self._send_loop(), name=f"send {self.id}"),
            asyncio.create_task(self._receive_loop(), name=f"receive {self.id}"),
            closing,
            asyncio.create_task(self._watch_peer(), name=f"liveness {self.id}"),
        ]
        try:
            # Shielded: redis-py (in the store or a plugin) can swallow a cancellation that
            # lands mid-command, and a client that leaves right now must still end this
            # session, so this handler only ever awaits a future it owns.
            opening = asyncio.ensure_future(self._open())
            try:
                await asyncio.shield(opening)
            except asyncio.CancelledError:
                await asyncio.wait([opening], timeout=CLOSE_TIMEOUT)  # record, then forget
                if opening.done() and not opening.cancelled():
                    opening.exception()  # retrieved: failures are logged by _open
                raise
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("session %s failed", self.id, exc_info=task.exception())
                    self.close(protocol.CLOSE_INTERNAL, "internal error")
        finally:
            for task in tasks:
                task.cancel()
            # Shielded: a second cancellation (client gone, then server shutdown) must not
            # skip the cleanup, or the session stays listed and in the store for good.
            self._cleanup_task = asyncio.ensure_future(self._cleanup(tasks))  # a strong ref
            await asyncio.shield(self._cleanup_task)

    async def _open(self) -> None:
        """Record the session in the store and run ``client_connected``."""
        try:
            await self._service.store.connect(self.id, self.client_id)
        except Unavailable:
            log.warning("session %s: store unreachable at connect", self.id)
        await self._service.notify("client_connected", session=self)

    async def _cleanup(self, tasks: list[asyncio.Future[Any]]) -> None:
        calls = list(self._calls)
        for call in calls:
            call.cancel()  # nobody is left to read the answer
        await asyncio.gather(*tasks, *calls, return_exceptions=True)
        await self._finish()

    async def _finish(self) -> None:
        """Leave every channel, clean the store, run hooks, send the close frame."""
        service = self._service
        service.sessions.discard(self)
        # self.channels is kept: client_disconnected hooks read where the session was
        channels = sorted(self.channels)
        try:
            for channel in channels:
                await service.hub.leave(self, channel)
            if service.stopping and service.presence is not None:
                # a thousand sessions each cleaning up alone would queue for the command
                # pool past the shutdown timeout; the presence sweeps them in bulk
                self.records_left = True
            else:
                await service.store.disconnect(self.id, self.client_id, channels)
        except Exception:
            self.records_left = True
            log.warning("session %s: cleanup incomplete", self.id, exc_info=True)
        await service.membership("leave", channels, self.client_id, self.id)
        if self.close_code is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._websocket.close(self.close_code, self.close_reason), CLOSE_TIMEOUT
                )
        else:
            self.close_code, self.close_reason = 1000, "client closed"
        self.finished.set()
        metrics.session_closed()
        logs.disconnected(self)
        await service.notify("client_disconnected", session=self)

    def _welcome(self) -> dict[str, Any]:
        s = self._settings
        return {
            "type": "welcome",
            "client_id": self.client_id,
            "session": self.id,
            "server": f"quart-chat {__version__}",
            "protocol": protocol.PROTOCOL_VERSION,
            "batch": self.batch,
            "limits": {
                "max_text_length": s.max_text_length,
                "max_frame_bytes": s.max_frame_bytes,
                "max_channels": s.max_channels_per_session,
                "publish_rate": s.publish_rate,
                "publish_burst": s.publish_burst,
            },
        }

    async def _send_loop(self) -> None:
        """The only writer of this socket.

        Writes go straight to the ASGI ``send`` when Quart's internals allow (see
        :func:`_asgi_text_sender`): Quart's ``websocket.send`` adds an
        ``asyncio.sleep(0)``, an accept check and a blinker signal to every frame, which
        costs more than the rest of our per-delivery work. The loop takes everything
        queued at once, and yields to the event loop every ``SEND_BURST`` frames so a
        busy socket cannot starve the others.
        """
        send = _asgi_text_sender(self._websocket) or self._websocket.send
        loop = asyncio.get_running_loop()
        batch = self.batch
        while True:
            if not self._outbox:
                self._wakeup = wakeup = loop.create_future()
                await wakeup
                if batch:
                    # Let the hub queue whatever else the broker has already read, so
                    # one WebSocket frame carries it all: yield while the outbox keeps
                    # growing (a few turns at most). At light load that is one turn.
                    for _ in range(COALESCE_TURNS):
                        waiting = len(self._outbox)
                        await asyncio.sleep(0)
                        if len(self._outbox) == waiting:
                            break
            frames, self._outbox = self._outbox, []
            if batch:
                for start in range(0, len(frames), MAX_BATCH):
                    await send("\n".join(frames[start:start + MAX_BATCH]))
                continue
            for count, frame in enumerate(frames, 1):
                await send(frame)
                if count % SEND_BURST == 0:
                    await asyncio.sleep(0)

    async def _receive_loop(self) -> None:
        receive = self._websocket.receive
        max_bytes = self._settings.max_frame_bytes
        backlog, max_backlog = _inbound_backlog(self._websocket), self._settings.max_inbound_backlog
        frames = self._frames
        while True:
            data = await receive()
            if self.close_code is not None:
                return  # closing: do not act on (or answer) anything more
            if backlog() > max_backlog:
                self.close(protocol.CLOSE_POLICY, "too many frames sent without waiting")
                return
            self._last_frame = time.monotonic()
            if not frames.take():
                self._fail(None, RateLimited(
                    f"more than {self._settings.frame_rate:g} frames per second"))
                continue
            try:
                frame = protocol.decode(data, max_bytes)
            except FrameError as exc:
                metrics.frame_in(None)
                self._fail(exc.request_id, exc.error)
                continue
            metrics.frame_in(frame)
            try:
                fields = await self._handlers[type(frame)](frame)
                if fields is _DEFERRED:
                    continue
            except ChatError as exc:
                self._fail(frame.id, exc)
                continue
            except Exception:
                log.exception("session %s: %s failed", self.id, type(frame).__name__)
                self._fail(frame.id, ChatError("internal server error"))
                continue
            metrics.result_sent()
            if fields is not _ANSWERED:
                self.deliver(protocol.result(frame.id, fields))

    def _fail(self, request_id: protocol.RequestId, exc: ChatError) -> None:
        metrics.error_sent(exc.code)
        self.deliver(protocol.error(request_id, exc))
        if exc.code in ABUSE_CODES and not self._abuse.take():
            self.close(protocol.CLOSE_POLICY, "too many bad frames")

    # -- operations ------------------------------------------------------------------------

    async def _authorize(self, action: str, channel: str) -> None:
        if self.allowed_channels is not None and not channel_allowed(
            self.allowed_channels, channel
        ):
            raise Forbidden(f"your token does not allow {action} on {channel!r}")
        calls = self._service.hooks
        for impl in reversed(calls.pm.hook.authorize.get_hookimpls()):
            allowed = await calls.call(
                impl, "authorize", {"session": self, "action": action, "channel": channel}
            )
            if allowed is False:
                raise Forbidden(f"not allowed to {action} to {channel!r}")

    async def _subscribe(self, frame: Subscribe) -> object:
        channel = check_channel(frame.channel)
        if channel in self.channels:
            raise AlreadySubscribed(f"already subscribed to {channel!r}")
        limit = self._settings.max_channels_per_session
        if len(self.channels) >= limit:
            raise Forbidden(f"subscription limit reached: at most {limit} channels per session")
        await self._authorize("subscribe", channel)
        service = self._service
        if frame.since is not None:
            self._held[channel] = []  # live frames wait until the missed ones are out
        try:
            await service.hub.join(self, channel)
            self.channels.add(channel)
            try:
                await service.store.join(self.id, self.client_id, channel)
            except Unavailable:
                self.channels.discard(channel)
                await service.hub.leave(self, channel)
                raise
        except BaseException:
            self._held.pop(channel, None)
            raise
        if frame.since is None:
            self.deliver(protocol.result(frame.id))
        else:
            await self._recover(frame.id, channel, frame.since)
        await service.membership("join", (channel,), self.client_id, self.id)
        await service.notify("client_subscribed", session=self, channel=channel)
        return _ANSWERED

    async def _unsubscribe(self, frame: Unsubscribe) -> dict[str, Any]:
        if frame.channel is None:
            leaving = sorted(self.channels)
        else:
            channel = check_channel(frame.channel)
            if channel not in self.channels:
                raise NotSubscribed(f"not subscribed to {channel!r}")
            leaving = [channel]
        service = self._service
        for channel in leaving:
            self.channels.discard(channel)
            self._replayed.pop(channel, None)
            await service.hub.leave(self, channel)
            try:
                await service.store.leave(self.id, self.client_id, channel)
            except Unavailable:
                log.warning("session %s: store unreachable leaving %s", self.id, channel)
        await service.membership("leave", leaving, self.client_id, self.id)
        for channel in leaving:
            await service.notify("client_unsubscribed", session=self, channel=channel)
        return {"channels": sorted(self.channels)}

    async def _publish(self, frame: Publish) -> dict[str, Any]:
        channel = check_channel(frame.channel)
        if channel not in self.channels:
            raise NotSubscribed(f"subscribe to {channel!r} before publishing to it")
        limit = self._settings.max_text_length
        if len(frame.text) > limit:
            raise TooLarge(f"text is longer than {limit} characters")
        if not self._publishes.take():
            raise RateLimited(f"more than {self._settings.publish_rate:g} publishes per second")
        await self._authorize("publish", channel)
        ts = time.time()
        message = Message(channel=channel, sender=self.client_id, text=frame.text, ts=ts,
                          mid=protocol.new_mid(ts))
        message = await self._service.publish(message, self)
        return {"mid": message.mid}

    async def _channels(self, frame: Channels) -> dict[str, Any]:
        return {"channels": sorted(self.channels)}

    async def _presence(self, frame: Presence) -> dict[str, Any]:
        channel = check_channel(frame.channel)
        return {"clients": await self._service.store.presence(channel)}

    async def _history(self, frame: History) -> dict[str, Any]:
        channel = check_channel(frame.channel)
        if not 1 <= frame.limit <= self._settings.max_history:
            raise BadFrame(f"limit must be between 1 and {self._settings.max_history}")
        await self._authorize("subscribe", channel)
        messages = await self._service.hooks.first(
            "history", channel=channel, limit=frame.limit, before=frame.before
        )
        if messages is None:
            raise HistoryUnavailable("no plugin keeps history for this channel")
        return {"messages": list(messages)[: frame.limit]}

    async def _ping(self, frame: Ping) -> dict[str, Any]:
        return {"ts": time.time()}

    async def _call(self, frame: Call) -> object:
        """Start the ``call`` in its own task: a slow function must not hold up this
        socket's other frames (they are answered meanwhile, out of order)."""
        method = check_method(frame.method)
        if len(self._calls) >= MAX_CALLS_IN_FLIGHT:
            raise RateLimited(f"more than {MAX_CALLS_IN_FLIGHT} calls running; wait for "
                              "a result before calling again")
        task = asyncio.create_task(self._answer_call(frame.id, method, frame.params or {}),
                                   name=f"call {method} {self.id}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return _DEFERRED

    async def _answer_call(self, request_id: protocol.RequestId, method: str,
                           params: dict[str, Any]) -> None:
        try:
            data = await self._service.call(self, method, params)
            try:
                frame = protocol.result(request_id, {"data": data})
            except (TypeError, msgspec.EncodeError) as exc:
                log.error("session %s: call %s answered a value JSON cannot carry: %s",
                          self.id, method, exc)
                raise InternalError(f"the answer of {method!r} is not JSON") from None
        except ChatError as exc:
            self._fail(request_id, exc)
            return
        except Exception:
            log.exception("session %s: call %s failed", self.id, method)
            self._fail(request_id, ChatError("internal server error"))
            return
        metrics.result_sent()
        self.deliver(frame)

    # -- reliability: recovery, dead peers ----------------------------------------------

    async def _recover(self, request_id: protocol.RequestId, channel: str, since: str) -> None:
        """Answer a ``subscribe`` with ``since``: the missed messages, then live ones.

        Live frames for ``channel`` were held back since before the broker subscription,
        so nothing falls between the stored messages and the live stream; a live frame
        that was also recovered (same ``mid``) is sent once. A message is stored after
        the broker accepted it, so its live frame can still be on its way through Redis
        when the replay is read: such late frames are dropped too, until a frame made
        after the replay (by its ``mid`` time, plus clock slack) shows none can follow.
        """
        read_at = time.time()
        limit = min(self._settings.max_recovery, max(1, self._settings.outbound_queue // 2))
        missed: list[Message] | None = None
        try:
            missed = await self._service.hooks.first(
                "recover", channel=channel, since=since, limit=limit + 1
            )
        except ChatError:
            missed = None  # logged by the hook runner; the client is told below
        recovered = missed is not None and len(missed) <= limit
        frames = [protocol.encode_message(m).decode() for m in missed or ()] if recovered else []
        held = self._held.pop(channel, [])
        self.deliver(protocol.result(request_id, {"recovered": recovered, "missed": len(frames)}))
        seen = {m.mid for m in missed or ()} if recovered else set()
        for frame in frames:
            self.deliver(frame)
        for mid, frame in held:
            if mid is None or mid not in seen:
                self.deliver(frame)
        late = seen - {mid for mid, _ in held}
        if late:
            self._replayed[channel] = (late, protocol.new_mid(read_at + REPLAY_CLOCK_SLACK)[:12])

    def _replayed_already(self, frame: str) -> bool:
        """Drop a late live frame of a message a recovery already replayed; True if so."""
        channel, mid = _channel_and_mid(frame)
        pending = self._replayed.get(channel) if channel is not None else None
        if pending is None or mid is None:
            return False
        late, horizon = pending
        if mid in late:
            late.discard(mid)
            if not late:
                del self._replayed[channel]  # type: ignore[arg-type]
            return True
        if mid[:12] > horizon:  # made after the replay was read: the late ones are past
            del self._replayed[channel]  # type: ignore[arg-type]
        return False

    def _hold(self, frame: str) -> bool:
        """Keep ``frame`` back if its channel is being recovered; True when held."""
        channel, mid = _channel_and_mid(frame)
        held = self._held.get(channel) if channel is not None else None
        if held is None:
            return False
        if len(held) >= self._settings.outbound_queue:
            self.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full")
        else:
            held.append((mid, frame))
        return True

    async def _watch_peer(self) -> None:
        """Close a peer that sent nothing (no frame, no pong) for ping interval + timeout.

        hypercorn pings when configured with ``websocket_ping_interval`` (``quart-chat
        serve`` does); under a hypercorn run without it, this loop sends the pings. Without
        the transport stamp (see :mod:`quart_chat.liveness`) nothing is enforced.
        """
        settings = self._settings
        allowed = settings.ping_interval + settings.ping_timeout
        step = max(0.05, min(1.0, settings.ping_timeout / 4))
        scope = getattr(self._websocket, "scope", None) or {}
        await asyncio.sleep(step)
        activity = liveness.activity_of(scope)
        if activity is None:
            return
        next_ping = time.monotonic() + settings.ping_interval
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            if not activity.hypercorn_pings and now >= next_ping:
                next_ping = now + settings.ping_interval
                with contextlib.suppress(Exception):  # a closing socket: the loop ends soon
                    await asyncio.wait_for(activity.ping(), CLOSE_TIMEOUT)
            silent = now - max(self._last_frame, activity.last)
            if silent > allowed:
                log.info("session %s: no pong or frame for %.1fs; closing", self.id, silent)
                self.close(protocol.CLOSE_DEAD_PEER, "no pong: peer presumed dead")
                return


def _channel_and_mid(frame: str) -> tuple[str | None, str | None]:
    """The ``channel`` and ``mid`` of an encoded frame (None where it has none)."""
    try:
        value = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    channel, mid = value.get("channel"), value.get("mid")
    return (channel if isinstance(channel, str) else None,
            mid if isinstance(mid, str) else None)


def channel_allowed(patterns: tuple[str, ...], channel: str) -> bool:
    """Does a token's ``channels`` claim allow ``channel``? Exact names; ``prefix*`` globs."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if channel.startswith(pattern[:-1]):
                return True
        elif channel == pattern:
            return True
    return False


def _asgi_text_sender(websocket: Any) -> Callable[[str], Awaitable[None]] | None:
    """The ASGI ``send`` behind Quart's ``websocket.send``, as a text-frame writer.

    Quart builds ``websocket._send`` as ``partial(ASGIWebsocketConnection.send_data,
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
