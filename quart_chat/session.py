"""One WebSocket: an inbound loop, the only writer (outbound loop), dispatch and close.

The rules of each operation live in :class:`~quart_chat.service.ChatService`; this
module is the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import logs, metrics, protocol, transport
from .errors import ChatError, RateLimited
from .limits import TokenBucket
from .protocol import (
    Call,
    Channels,
    ClientFrame,
    FrameError,
    History,
    Ping,
    Presence,
    Publish,
    Refresh,
    Subscribe,
    Unsubscribe,
)
from .recovery import Recovery
from .tasks import cancel_and_wait
from .tokens import expiry
from .version import __version__

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
#: Frames the send loop may write back to back before it yields to the event loop.
SEND_BURST = 64
#: Frames one write of a coalescing sender must carry for it to count as under load
#: (two can be a chance burst at light load).
LOADED_FRAMES = 3
#: Most ``call`` frames one session may have running at once; one more is answered
#: ``rate_limited``. Each runs in its own task, so this bounds what a client can start.
MAX_CALLS_IN_FLIGHT = 16
#: Seconds a session whose outbox is half full waits for the client to read some of it
#: before it reads the client's next frame; past that it is closed as a slow consumer.
DRAIN_TIMEOUT = 5.0
#: Seconds a session keeps cancelling its own tasks before it ends without them.
TASK_STOP_BOUND = 2.0

_ANSWERED = object()  # a handler that queued its own result frame returns this
_DEFERRED = object()  # a handler whose task will answer later (a ``call``) returns this


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
        #: heartbeat sweeps them (quart_chat.backends.node_heartbeat).
        self.records_left = False
        self._service = service
        self._settings = settings
        self._websocket = websocket
        # The outbound queue: a plain list the send loop swaps out whole, and the future
        # it sleeps on when the list is empty. Cheaper per delivery and per idle session
        # than an asyncio.Queue (three deques and an Event each). It is bounded twice: in
        # frames, and in characters waiting (one history reply can be megabytes), the
        # frame being written not included.
        self._outbox: list[str] = []
        self._outbox_limit = settings.outbound_queue
        self._outbox_chars = 0
        self._outbox_char_limit = settings.outbound_queue_bytes
        self._wakeup: asyncio.Future[None] | None = None
        # Set while the receive loop waits for a congested outbox to drain (see _drain).
        self._drained: asyncio.Future[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        #: True when the client ended the socket (nothing to send a close frame to).
        self._peer_gone = False
        #: The publish rate limit (spent by the service's publish rule).
        self.publishes = TokenBucket(settings.publish_rate, settings.publish_burst)
        self._abuse = TokenBucket(settings.max_bad_frames / 10, settings.max_bad_frames)
        self._frames = TokenBucket(settings.frame_rate, 2 * settings.frame_rate)
        #: Claims of the client's token (None in development mode or via ``authenticate``).
        self.claims: dict[str, Any] | None = None
        #: Channel patterns the token's ``channels`` claim allows; None means no limit.
        self.allowed_channels: tuple[str, ...] | None = None
        #: Monotonic time of the last frame received (read by quart_chat.liveness).
        self.last_frame = time.monotonic()
        #: Recovery's ordering state; made by the first ``subscribe`` with ``since``.
        self.recovery: Recovery | None = None
        #: Running ``call`` tasks (at most MAX_CALLS_IN_FLIGHT); cancelled when it ends.
        self._calls: set[asyncio.Task[None]] = set()
        #: Closes the session when its token expires (see :meth:`expire_at`).
        self._expiry: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Session {self.id} client_id={self.client_id!r}>"

    # -- called by the hub and the service (never awaits) -------------------------------

    def deliver(self, frame: str) -> None:
        """Queue one frame; a full queue means the client stopped reading: close it.

        Full is ``outbound_queue`` frames, or more than ``outbound_queue_bytes`` waiting
        (counted in characters: the UTF-8 bytes of ASCII text, the JSON encoding's
        escapes included), so a frame larger than the byte limit still fits an empty
        queue and a well-behaved client can receive one.
        """
        recovery = self.recovery
        if recovery is not None and recovery.intercepts(frame):
            return
        outbox = self._outbox
        if len(outbox) >= self._outbox_limit or self._outbox_chars > self._outbox_char_limit:
            if self.close_code is None:
                metrics.slow_consumer()
            self._slow_consumer()
            return
        outbox.append(frame)
        self._outbox_chars += len(frame)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    @property
    def queue_depth(self) -> int:
        """Frames waiting to be written to this socket."""
        return len(self._outbox)

    @property
    def queue_bytes(self) -> int:
        """Size of the frames waiting to be written (characters; see :meth:`deliver`)."""
        return self._outbox_chars

    def recovering(self) -> Recovery:
        """This session's :class:`~quart_chat.recovery.Recovery`, made on first use."""
        if self.recovery is None:
            self.recovery = Recovery(self._outbox_limit, self._slow_consumer)
        return self.recovery

    def _slow_consumer(self) -> None:
        self.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full")

    def expire_at(self, exp: float | None) -> None:
        """Close the session (4003) at ``exp``, the token's epoch seconds; None: never.

        One timer handle per session with an expiring token, replaced on ``refresh`` and
        cancelled when the session ends: nothing is spent per frame.
        """
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if exp is not None and self.close_code is None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_at(loop.time() + exp - time.time(), self.close,
                                        protocol.CLOSE_TOKEN_EXPIRED, "token expired")

    def close(self, code: int, reason: str) -> None:
        """Ask the session to end with ``code``; the first reason given wins."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            closing = self._closing
            if closing is not None and not closing.done():
                if _on_loop(closing.get_loop()):
                    closing.set_result(None)
                else:  # a sync hook, in its worker thread
                    closing.get_loop().call_soon_threadsafe(_resolve, closing)

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until the client leaves or the session is closed."""
        service = self._service
        try:
            await self._websocket.accept()
        except BaseException:
            service.release(self)  # the slot admit() reserved: this session never ran
            raise
        self.expire_at(expiry(self.claims))
        self.deliver(protocol.encode(self._welcome()))
        service.session_started(self)
        metrics.session_opened()
        logs.connected(self)
        self._closing = closing = asyncio.get_running_loop().create_future()
        if self.close_code is not None:
            closing.set_result(None)
        tasks: list[asyncio.Future[Any]] = [
            asyncio.create_task(self._send_loop(), name=f"send {self.id}"), closing]
        # Only hypercorn's stream tells us when the peer last sent anything; uvicorn and
        # granian handle pings and dead peers themselves (see quart_chat.transport).
        activity = transport.activity_of(self._websocket)
        if activity is not None:
            service.liveness.watch(self, activity)
        loops = tasks[:1]
        try:
            # Frames are read only once the session's records are written and listed
            # under this process: a subscribe acted on before that would leave presence
            # that no reaper finds if the process dies now.
            await self._own(service.record_session(self))
            loops.append(asyncio.create_task(self._receive_loop(), name=f"receive {self.id}"))
            tasks.append(loops[1])
            # The session ends when either loop ends or close() resolves ``closing``:
            # a done callback on each loop, not asyncio.wait's waiter and set held for
            # the whole life of every idle session.
            for task in loops:
                task.add_done_callback(self._loop_ended)
            await self._own(service.session_opened(self))
            await closing
            for task in loops:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("session %s failed", self.id, exc_info=task.exception())
                    self.close(protocol.CLOSE_INTERNAL, "internal error")
        finally:
            self.expire_at(None)
            # Shielded: a second cancellation (client gone, then server shutdown) must not
            # skip the cleanup, or the session stays listed and in the store for good.
            self._cleanup_task = asyncio.ensure_future(self._cleanup(tasks))  # a strong ref
            await asyncio.shield(self._cleanup_task)

    @staticmethod
    async def _own(step: Awaitable[None]) -> None:
        """Run an opening step (records, hooks) in a task of its own, forgotten once
        done."""
        # Shielded: redis-py (in the store or a plugin) can swallow a cancellation that
        # lands mid-command, and a client that leaves right now must still end this
        # session, so this handler only ever awaits a future it owns.
        opening = asyncio.ensure_future(step)
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait([opening], timeout=CLOSE_TIMEOUT)  # record, then forget
            if opening.done() and not opening.cancelled():
                opening.exception()  # retrieved: failures are logged where they happen
            raise

    def _loop_ended(self, task: asyncio.Future[Any]) -> None:
        closing = self._closing
        if closing is not None and not closing.done():
            closing.set_result(None)

    async def _cleanup(self, tasks: list[asyncio.Future[Any]]) -> None:
        calls = list(self._calls)  # nobody is left to read their answers
        # A task of ours can swallow its cancellation (redis-py, mid-command, in a handler
        # the receive loop awaits) and carry on to wait on a socket that will never speak
        # again: cancel until each ends, and end the session even if one never does.
        await cancel_and_wait([*tasks, *calls], bound=TASK_STOP_BOUND,
                              what=f"session {self.id} tasks")
        await self._finish()

    async def _finish(self) -> None:
        """Leave every channel, clean the store, send the close frame, run hooks."""
        service = self._service
        service.session_ended(self)
        service.liveness.forget(self)
        await service.session_leaving(self)
        if self.close_code is None:
            self.close_code, self.close_reason = 1000, "client closed"
        elif not self._peer_gone:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._websocket.close(self.close_code, self.close_reason), CLOSE_TIMEOUT
                )
        self.finished.set()
        metrics.session_closed()
        logs.disconnected(self)
        await service.session_closed(self)

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
        :func:`quart_chat.transport.text_sender`). The loop takes everything
        queued at once, and yields to the event loop every ``SEND_BURST`` frames so a
        busy socket cannot starve the others.
        """
        send = transport.text_sender(self._websocket) or self._websocket.send
        loop = asyncio.get_running_loop()
        batch = self.batch
        tick = self._service.hub.tick
        loaded = False
        while True:
            if not self._outbox:
                self._wakeup = wakeup = loop.create_future()
                await wakeup
            if loaded:
                # Coalescing (``?batch=1``) under load: the last frame carried several
                # messages, so messages already wait here; gather until the process's
                # next tick, and a frame carries many. At light load nothing waits.
                await asyncio.shield(tick.next())
            frames, self._outbox = self._outbox, []
            loaded = batch and len(frames) >= LOADED_FRAMES
            # A frame leaves the count as its write begins: a peer that stops reading
            # holds that one write, and the count bounds everything queued behind it.
            if batch:
                for start in range(0, len(frames), MAX_BATCH):
                    chunk = frames[start:start + MAX_BATCH]
                    self._outbox_chars -= sum(map(len, chunk))
                    await send("\n".join(chunk))
            else:
                for count, frame in enumerate(frames, 1):
                    self._outbox_chars -= len(frame)
                    await send(frame)
                    if count % SEND_BURST == 0:
                        await asyncio.sleep(0)
            drained = self._drained
            if drained is not None and not self._congested():
                self._drained = None
                if not drained.done():
                    drained.set_result(None)

    async def _receive_loop(self) -> None:
        """Read, decode and answer one frame at a time.

        The next frame is read only when this one is answered (see
        :class:`quart_chat.transport.PacedWebsocket`): a client that sends ahead waits on
        TCP instead of growing this server's memory.
        """
        receive = self._websocket.receive
        max_bytes = self._settings.max_frame_bytes
        frames = self._frames
        loop = asyncio.get_running_loop()
        while True:
            if self._congested():
                # Answers are piling up faster than the client takes them: read nothing
                # more until they drain, so a pipelining client is paced by its own
                # reading instead of being closed. One that takes nothing for
                # DRAIN_TIMEOUT is a slow consumer all the same.
                self._drained = drained = loop.create_future()
                try:
                    await asyncio.wait_for(drained, DRAIN_TIMEOUT)
                except TimeoutError:
                    metrics.slow_consumer()
                    self._slow_consumer()
                    return
            try:
                data = await receive()
            except transport.Disconnected as gone:
                self._peer_closed(gone.code, gone.reason)
                return
            if self.close_code is not None:
                return  # closing: do not act on (or answer) anything more
            self.last_frame = time.monotonic()
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
                fields = await _HANDLERS[type(frame)](self, frame)
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

    def _congested(self) -> bool:
        """Is the outbox half full (frames or bytes)? Then the client reads too slowly for
        what it sends, and its next frame waits."""
        return (len(self._outbox) * 2 >= self._outbox_limit
                or self._outbox_chars * 2 > self._outbox_char_limit)

    def _peer_closed(self, code: int, reason: str) -> None:
        """The client (or the transport on its behalf) ended the socket: record why, for
        the disconnect log; no close frame is sent back on a closed socket."""
        if self.close_code is None:
            self._peer_gone = True
            self.close(code, reason or ("client closed" if code in (1000, 1001, 1005)
                                        else "connection lost"))

    def _fail(self, request_id: protocol.RequestId, exc: ChatError) -> None:
        metrics.error_sent(exc.code)
        self.deliver(protocol.error(request_id, exc))
        if exc.code in ABUSE_CODES and not self._abuse.take():
            self.close(protocol.CLOSE_POLICY, "too many bad frames")

    # -- operations: the frame's fields to the service's rules --------------------------

    async def _subscribe(self, frame: Subscribe) -> object:
        await self._service.subscribe(self, frame.channel, since=frame.since, request_id=frame.id)
        return _ANSWERED

    async def _unsubscribe(self, frame: Unsubscribe) -> dict[str, Any]:
        return {"channels": await self._service.unsubscribe(self, frame.channel)}

    async def _publish(self, frame: Publish) -> dict[str, Any]:
        message = await self._service.publish(self, frame.channel, frame.text)
        return {"mid": message.mid}

    async def _channels(self, frame: Channels) -> dict[str, Any]:
        return {"channels": self._service.channels(self)}

    async def _presence(self, frame: Presence) -> dict[str, Any]:
        return {"clients": await self._service.presence(self, frame.channel)}

    async def _history(self, frame: History) -> dict[str, Any]:
        messages = await self._service.history(self, frame.channel, frame.limit, frame.before)
        return {"messages": messages}

    async def _ping(self, frame: Ping) -> dict[str, Any]:
        return {"ts": time.time()}

    async def _call(self, frame: Call) -> object:
        """Start the ``call`` in its own task: a slow function must not hold up this
        socket's other frames (they are answered meanwhile, out of order)."""
        method = protocol.check_method(frame.method)
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
            data = await self._service.call(self, method, params)  # checked: JSON
            frame = protocol.result(request_id, {"data": data})
        except ChatError as exc:
            self._fail(request_id, exc)
            return
        except Exception:
            log.exception("session %s: call %s failed", self.id, method)
            self._fail(request_id, ChatError("internal server error"))
            return
        metrics.result_sent()
        self.deliver(frame)

    async def _refresh(self, frame: Refresh) -> None:
        await self._service.refresh(self, frame.token)


#: Each frame type's handler: one table for every session, not a dict of bound methods each.
_HANDLERS: dict[type[ClientFrame], Callable[[Session, Any], Awaitable[Any]]] = {
    Subscribe: Session._subscribe,
    Unsubscribe: Session._unsubscribe,
    Publish: Session._publish,
    Channels: Session._channels,
    Presence: Session._presence,
    History: Session._history,
    Ping: Session._ping,
    Call: Session._call,
    Refresh: Session._refresh,
}


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
