"""A synchronous chat client for scripts, notebooks and tests (websocket-client).

::

    from quart_chat.client import ChatClient

    with ChatClient("ws://127.0.0.1:8000/ws", client_id="alice") as alice:
        alice.subscribe("lobby")
        alice.publish("lobby", "hi")
        print(alice.receive(timeout=5).text)
        print(alice.call("roll", {"dice": "2d6"}))  # a plugin function's answer

One background thread per client reads the socket: it answers requests (matched by
request id), keeps received messages for :meth:`ChatClient.receive`, and reconnects
when the connection drops, subscribing again to every channel the client was in.
Callbacks (:meth:`~ChatClient.on_message` and friends) run on a second thread, started
with the first callback, so a callback may itself call the client (a bot that replies).
Errors are :class:`quart_chat.errors.ChatError`: the server's code and message, or one
of the client-side subclasses below.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import websocket

from .errors import ChatError
from .protocol import CLOSE_POLICY, Message, decode_message

__all__ = [
    "ChatClient",
    "ClientClosed",
    "ConnectFailed",
    "Disconnected",
    "NotConnected",
    "Reconnected",
    "RequestTimeout",
    "ws_url",
]

log = logging.getLogger("quart_chat.client")

#: Seconds allowed for the close handshake before the socket is shut down anyway.
CLOSE_TIMEOUT = 2.0
#: Messages kept for :meth:`ChatClient.receive` before the oldest are dropped.
DEFAULT_INBOX = 10_000
#: token_provider: refresh at most this many seconds before the token expires.
REFRESH_AHEAD = 30.0
#: token_provider: first and longest wait before retrying a failed refresh, in seconds.
REFRESH_RETRY = 1.0
MAX_REFRESH_RETRY = 30.0
_MESSAGE_PREFIX = '{"type":"message"'  # how the server encodes every Message (tag first)
_STOP = object()

Callback = TypeVar("Callback", bound=Callable[..., Any])


# -- errors (client-side conditions; the server's own codes come from errors.py) -------


class RequestTimeout(ChatError, TimeoutError):
    """No reply (or no message, for :meth:`ChatClient.receive`) within the timeout."""

    code = "timeout"


class NotConnected(ChatError, ConnectionError):
    """The connection dropped before the reply came, or is being re-established."""

    code = "not_connected"


class ClientClosed(NotConnected):
    """The client was closed (by :meth:`ChatClient.close` or after giving up reconnecting)."""

    code = "closed"


class ConnectFailed(ChatError, ConnectionError):
    """The WebSocket handshake failed: nothing listens, or the server refused it.

    ``status`` is the HTTP status of a refusal (400 bad client id, 401 bad token,
    403 forbidden) or ``None`` when no HTTP answer came at all.
    """

    code = "connect_failed"

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# -- events handed to callbacks ----------------------------------------------------------


@dataclass(frozen=True)
class Disconnected:
    """The connection ended; ``reconnecting`` says whether the client will try again."""

    code: int | None
    reason: str
    reconnecting: bool


@dataclass(frozen=True)
class Reconnected:
    """The client is connected again, after ``attempts`` tries.

    ``channels`` are those it subscribed to again; ``lost`` maps each channel it could
    not rejoin to the server's error (it is no longer in those). ``recovered`` says, for
    each channel where the client had received a message before, whether the server
    replayed exactly what was missed meanwhile (``True``) or could not (``False``: fetch
    ``history`` if the gap matters).
    """

    attempts: int
    channels: list[str]
    lost: dict[str, ChatError] = field(default_factory=dict)
    welcome: dict[str, Any] = field(default_factory=dict)
    recovered: dict[str, bool] = field(default_factory=dict)


def ws_url(url: str, **params: str | None) -> str:
    """The WebSocket URL for ``url`` with ``params`` added to its query.

    ``http://host:port`` (what :class:`~quart_chat.testing.ServerThread` calls ``url``)
    becomes ``ws://host:port/ws``; a ``ws://`` URL keeps its path.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a server URL: {url!r} (use ws://HOST:PORT/ws or http://HOST:PORT)")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    query = dict(parse_qsl(parts.query))
    query.update({name: value for name, value in params.items() if value is not None})
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


class ChatClient:
    """One connection to a quart-chat server, usable as a context manager.

    Parameters:
        url: the server, ``ws://HOST:PORT/ws`` or ``http://HOST:PORT``.
        client_id: who to connect as (omit when a ``token`` or plugin decides).
        token: a JWT for servers with a token key (its ``sub`` is the client id).
        token_provider: instead of ``token``, a callable returning a fresh token: called
            at connect and at each reconnect, and ahead of the token's expiry, when the
            client sends it as a ``refresh`` so the session outlives the token.
        timeout: seconds to wait for the handshake and for each reply.
        reconnect: reconnect when the connection drops (not after :meth:`close`, and
            not after the server closed with 1008 for too many bad frames).
        reconnect_tries: attempts before giving up; the delay doubles from
            ``reconnect_delay`` up to ``max_reconnect_delay`` seconds.
        batch: opt into coalesced frames (``?batch=1``); faster, invisible to callers.
        inbox: messages kept for :meth:`receive`; beyond it the oldest are dropped
            (counted in :attr:`dropped`).
    """

    def __init__(
        self,
        url: str,
        client_id: str | None = None,
        *,
        token: str | None = None,
        token_provider: Callable[[], str] | None = None,
        timeout: float = 10.0,
        reconnect: bool = True,
        reconnect_tries: int = 20,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
        batch: bool = True,
        inbox: int = DEFAULT_INBOX,
    ) -> None:
        if token is not None and token_provider is not None:
            raise ValueError("give token or token_provider, not both")
        self.url = ws_url(url, client_id=client_id, token=token, batch="1" if batch else None)
        self._token_provider = token_provider
        self.timeout = timeout
        self.reconnect = reconnect
        self.reconnect_tries = reconnect_tries
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        #: The server's welcome frame (client id, session id, server version, limits).
        self.welcome: dict[str, Any] = {}
        #: Messages dropped because the inbox was full (nobody called :meth:`receive`).
        self.dropped = 0
        #: How many times the client has reconnected.
        self.reconnects = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _ws, _pending, _channels, state
        self._send_lock = threading.Lock()  # one writer at a time
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._channels: set[str] = set()
        # channel -> id of the last message received: rejoining asks for what came after
        self._last_mid: dict[str, str] = {}
        #: Per channel, whether the last reconnect recovered every missed message.
        self.recovered: dict[str, bool] = {}
        self._state = "connecting"
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._inbox: deque[Message] = deque()
        self._inbox_size = inbox
        self._inbox_ready = threading.Condition()
        self._callbacks: dict[str, list[Callable[..., Any]]] = {
            "message": [], "reconnect": [], "disconnect": [], "gap": [], "presence": [],
        }
        self._events: queue.Queue[Any] = queue.Queue(maxsize=inbox)
        self._dispatcher: threading.Thread | None = None
        # token_provider: when to send the next refresh (epoch seconds; None: never), and
        # what wakes the refresh thread early (a new token at reconnect, or close)
        self._refresh_at: float | None = None
        self._refresh_delay = REFRESH_RETRY
        self._token_changed = threading.Event()
        self._ws = self._open()
        self._set_state("connected")
        self._reader = threading.Thread(target=self._read_forever, daemon=True,
                                        name=f"quart-chat client {self.client_id}")
        self._reader.start()
        if token_provider is not None:
            threading.Thread(target=self._refresh_forever, args=(token_provider,), daemon=True,
                             name=f"quart-chat refresh {self.client_id}").start()

    def __repr__(self) -> str:
        return f"<ChatClient {self.client_id!r} {self._state}>"

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the server said about us ----------------------------------------------------

    @property
    def client_id(self) -> str:
        """The client id the server gave this connection."""
        return str(self.welcome.get("client_id", ""))

    @property
    def session_id(self) -> str:
        """The server's id for the current connection (changes on reconnect)."""
        return str(self.welcome.get("session", ""))

    @property
    def state(self) -> str:
        """``connected``, ``reconnecting`` or ``closed``."""
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def subscriptions(self) -> list[str]:
        """The channels this client is in, as it knows them (no round trip)."""
        with self._lock:
            return sorted(self._channels)

    # -- operations (each waits for its reply) --------------------------------------------

    def subscribe(self, channel: str, *, timeout: float | None = None) -> None:
        """Join ``channel``: from now on its messages arrive here."""
        self.request("subscribe", timeout=timeout, channel=channel)

    def unsubscribe(self, channel: str | None = None, *, timeout: float | None = None
                    ) -> list[str]:
        """Leave ``channel`` (every channel when omitted); the channels still joined."""
        fields = {} if channel is None else {"channel": channel}
        return list(self.request("unsubscribe", timeout=timeout, **fields)["channels"])

    def publish(self, channel: str, text: str, *, timeout: float | None = None) -> str:
        """Send ``text`` to ``channel`` (subscribe first); the message id."""
        return str(self.request("publish", timeout=timeout, channel=channel, text=text)["mid"])

    def channels(self, *, timeout: float | None = None) -> list[str]:
        """The channels the server has this connection subscribed to."""
        return list(self.request("channels", timeout=timeout)["channels"])

    def presence(self, channel: str, *, timeout: float | None = None) -> list[str]:
        """The client ids subscribed to ``channel``, across every server process."""
        return list(self.request("presence", timeout=timeout, channel=channel)["clients"])

    def history(self, channel: str, limit: int = 50, before: str | None = None, *,
                timeout: float | None = None) -> list[Message]:
        """Up to ``limit`` earlier messages of ``channel``, newest first.

        Needs a plugin that keeps history; otherwise raises ``history_unavailable``.
        ``before`` is a message id: only older messages are returned (paging).
        """
        fields: dict[str, Any] = {"channel": channel, "limit": limit}
        if before is not None:
            fields["before"] = before
        reply = self.request("history", timeout=timeout, **fields)
        return [msgspec.convert(item, Message) for item in reply["messages"]]

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> Any:
        """Run the server's plugin function ``method`` with ``params``; its answer.

        Raises :class:`ChatError` with the server's code: ``unknown_method`` when no
        plugin answers, ``rejected`` or ``forbidden`` with the plugin's reason.
        """
        fields: dict[str, Any] = {"method": method}
        if params is not None:
            fields["params"] = params
        return self.request("call", timeout=timeout, **fields)["data"]

    def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip time to the server, in seconds."""
        start = time.perf_counter()
        self.request("ping", timeout=timeout)
        return time.perf_counter() - start

    def request(self, kind: str, *, timeout: float | None = None, **fields: Any
                ) -> dict[str, Any]:
        """Send a frame of type ``kind`` with a fresh id; its result frame.

        Raises the server's error as :class:`ChatError` (``code``, ``message``),
        :class:`RequestTimeout` when no reply comes within ``timeout`` seconds and
        :class:`NotConnected` when the connection drops first. While the client is
        reconnecting, the request waits (within ``timeout``) for the new connection.
        """
        timeout = self.timeout if timeout is None else timeout
        if threading.current_thread() is getattr(self, "_reader", None):
            raise RuntimeError("the reader thread cannot wait for replies; use on_message")
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.05):
            if self._closed.is_set():
                raise ClientClosed("the client is closed")
            if time.monotonic() >= deadline:
                raise RequestTimeout(f"not connected within {timeout:g}s (reconnecting)")
        request_id, reply = self._send_request(kind, fields)
        try:
            frame = reply.result(max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise RequestTimeout(f"no reply to {kind!r} within {timeout:g}s") from None
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        self._track(kind, fields, frame)
        return frame

    def _send_request(self, kind: str, fields: dict[str, Any]
                      ) -> tuple[int, Future[dict[str, Any]]]:
        request_id = next(self._ids)
        reply: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._closed.is_set():
                raise ClientClosed("the client is closed")
            ws = self._ws
            self._pending[request_id] = reply
        try:
            self._send(ws, {"type": kind, "id": request_id, **fields})
        except (OSError, websocket.WebSocketException) as exc:
            with self._lock:
                self._pending.pop(request_id, None)
            raise NotConnected(f"connection lost while sending {kind!r}: {exc}") from None
        return request_id, reply

    def _send(self, ws: websocket.WebSocket, frame: dict[str, Any]) -> None:
        data = msgspec.json.encode(frame).decode()
        with self._send_lock:
            ws.send(data)

    def _track(self, kind: str, fields: dict[str, Any], frame: dict[str, Any]) -> None:
        """Remember the channels we are in, to join them again after a reconnect."""
        with self._lock:
            if kind == "subscribe":
                self._channels.add(fields["channel"])
            elif kind == "unsubscribe":
                self._channels = set(frame.get("channels", ()))
                for channel in set(self._last_mid) - self._channels:
                    del self._last_mid[channel]  # a later subscribe starts afresh

    # -- receiving ------------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> Message:
        """The next received message (oldest first), waiting up to ``timeout`` seconds.

        Raises :class:`RequestTimeout` when none arrives in time and
        :class:`ClientClosed` once the client is closed and every message was read.
        """
        with self._inbox_ready:
            ready = self._inbox_ready.wait_for(
                lambda: self._inbox or self._closed.is_set(), timeout
            )
            if self._inbox:
                return self._inbox.popleft()
        if not ready:
            raise RequestTimeout(f"no message within {timeout:g}s")
        raise ClientClosed("the client is closed")

    def assert_quiet(self, seconds: float = 0.5) -> None:
        """Assert that no message arrives within ``seconds`` (and none is waiting).

        For tests of what must *not* be delivered (a rejected message, an unsubscribed
        channel). Raises :class:`AssertionError` naming the messages that came; they stay
        available to :meth:`receive`.
        """
        with self._inbox_ready:
            self._inbox_ready.wait_for(lambda: bool(self._inbox), seconds)
            arrived = list(self._inbox)
        if arrived:
            listed = ", ".join(f"{m.sender}@{m.channel}: {m.text!r}" for m in arrived[:5])
            raise AssertionError(f"expected no message within {seconds:g}s, "
                                 f"{len(arrived)} arrived: {listed}")

    def messages(self, timeout: float | None = None) -> Iterator[Message]:
        """Iterate over received messages; stops after ``timeout`` seconds without one,
        or when the client is closed."""
        while True:
            try:
                yield self.receive(timeout)
            except (RequestTimeout, ClientClosed):
                return

    def pending(self) -> int:
        """How many received messages wait for :meth:`receive`."""
        with self._inbox_ready:
            return len(self._inbox)

    def drain(self) -> list[Message]:
        """Every message waiting for :meth:`receive`, without waiting."""
        with self._inbox_ready:
            messages = list(self._inbox)
            self._inbox.clear()
        return messages

    # -- callbacks --------------------------------------------------------------------------

    def on_message(self, callback: Callback) -> Callback:
        """Call ``callback(message)`` for every message received (usable as a decorator).

        Callbacks run one at a time on the client's callback thread, so they may call
        the client (reply, subscribe...). Messages also stay available to :meth:`receive`.
        Keep callbacks quick: once ``inbox`` events wait for them, the reader stops
        reading, and a server whose queue for this client fills up disconnects it.
        """
        return self._add("message", callback)

    def on_reconnect(self, callback: Callback) -> Callback:
        """Call ``callback(Reconnected)`` each time the client is connected again."""
        return self._add("reconnect", callback)

    def on_disconnect(self, callback: Callback) -> Callback:
        """Call ``callback(Disconnected)`` when the connection drops or is closed."""
        return self._add("disconnect", callback)

    def on_gap(self, callback: Callback) -> Callback:
        """Call ``callback(channel, reason)`` when the server says messages may be missing
        (its broker reconnected)."""
        return self._add("gap", callback)

    def on_presence(self, callback: Callback) -> Callback:
        """Call ``callback(frame)`` for each ``join`` / ``leave`` frame (servers run with
        ``QUART_CHAT_JOIN_LEAVE=true``): a dict with type, channel, client_id, session."""
        return self._add("presence", callback)

    def remove_callback(self, callback: Callable[..., Any]) -> None:
        """Stop calling ``callback`` (for whichever events it was registered)."""
        with self._lock:
            for callbacks in self._callbacks.values():
                while callback in callbacks:
                    callbacks.remove(callback)

    def _add(self, event: str, callback: Callback) -> Callback:
        with self._lock:
            if self._closed.is_set():
                raise ClientClosed("the client is closed")
            self._callbacks[event].append(callback)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(
                    target=self._dispatch_forever, daemon=True,
                    name=f"quart-chat callbacks {self.client_id}",
                )
                self._dispatcher.start()
        return callback

    def _emit(self, event: str, *args: Any) -> None:
        """Hand an event to the callback thread (blocks while it is full: backpressure)."""
        if self._dispatcher is None or not self._callbacks[event]:
            return
        while not self._closed.is_set():
            try:
                self._events.put((event, args), timeout=0.1)
                return
            except queue.Full:
                continue

    def _dispatch_forever(self) -> None:
        while True:
            try:
                item = self._events.get(timeout=0.5)
            except queue.Empty:
                if self._closed.is_set():  # closed while the queue was too full for _STOP
                    return
                continue
            if item is _STOP:
                return
            event, args = item
            with self._lock:
                callbacks = list(self._callbacks[event])
            for callback in callbacks:
                try:
                    callback(*args)
                except Exception:
                    log.exception("client %s: %s callback %r raised", self.client_id, event,
                                  callback)

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop the client's threads (idempotent)."""
        with self._lock:
            if self._closed.is_set():
                already = True
            else:
                already = False
                self._closed.set()
                self._connected.clear()
            ws = self._ws
        if not already:
            with contextlib.suppress(Exception), self._send_lock:
                ws.send_close(1000, b"client closed")
        reader = getattr(self, "_reader", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(CLOSE_TIMEOUT)
            if reader.is_alive():  # the server did not answer the close frame
                _shutdown(ws)
                reader.join(CLOSE_TIMEOUT)
        _close(ws)
        self._finish("closed by the client", 1000)

    def _finish(self, reason: str, code: int | None) -> None:
        """Closed for good: fail waiting requests, wake receivers, stop callbacks."""
        first = self._state != "closed"
        self._closed.set()
        self._token_changed.set()  # the refresh thread ends
        self._set_state("closed")
        self._fail_pending(ClientClosed(f"the client is closed ({reason})"))
        with self._inbox_ready:
            self._inbox_ready.notify_all()
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        if first and self._callbacks["disconnect"]:
            with contextlib.suppress(queue.Full):
                self._events.put_nowait(("disconnect", (Disconnected(code, reason, False),)))
        with contextlib.suppress(queue.Full):
            self._events.put(_STOP, timeout=CLOSE_TIMEOUT)
        if dispatcher is not threading.current_thread():
            dispatcher.join(CLOSE_TIMEOUT * 2)

    def _fail_pending(self, error: ChatError) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for reply in pending:
            with contextlib.suppress(InvalidStateError):
                reply.set_exception(error)

    def _set_state(self, state: str) -> None:
        with self._lock:
            if self._state == "closed":
                return
            self._state = state
            if state == "connected":
                self._connected.set()
            else:
                self._connected.clear()

    # -- the reader thread ------------------------------------------------------------------

    def _open(self) -> websocket.WebSocket:
        """Handshake and read the welcome frame; the socket then blocks without timeout."""
        url, token = self.url, None
        if self._token_provider is not None:
            try:
                token = self._token_provider()
            except Exception as exc:
                raise ConnectFailed(f"the token provider failed: {exc!r}") from None
            url = ws_url(url, token=token)
        try:
            ws = websocket.create_connection(url, timeout=self.timeout,
                                             enable_multithread=True)
        except websocket.WebSocketBadStatusException as exc:
            raise ConnectFailed(_refusal(exc), exc.status_code) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectFailed(f"cannot connect to {self.url}: {exc}") from None
        try:
            first, *rest = _text(ws.recv()).split("\n")
            welcome = msgspec.json.decode(first)
        except (OSError, websocket.WebSocketException, msgspec.DecodeError) as exc:
            _close(ws)
            raise ConnectFailed(f"no welcome from {self.url}: {exc}") from None
        if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
            _close(ws)
            raise ConnectFailed(f"expected a welcome frame, got {welcome!r}")
        self.welcome = welcome
        for line in rest:
            self._handle(line)
        ws.settimeout(None)  # the reader waits for frames; close() shuts the socket down
        if token is not None:
            self._adopt(token)
        return ws

    # -- token lifetime (token_provider) ----------------------------------------------------

    def _adopt(self, token: str) -> None:
        """The session now runs on ``token``: time the next refresh ahead of its ``exp``."""
        exp = _token_exp(token)
        now = time.time()
        with self._lock:
            self._refresh_at = None if exp is None else now + _refresh_lead(exp - now)
            self._refresh_delay = REFRESH_RETRY
        self._token_changed.set()

    def _refresh_forever(self, provider: Callable[[], str]) -> None:
        """The refresh thread: at each due time, a token from ``provider`` as ``refresh``."""
        while not self._closed.is_set():
            with self._lock:
                due = self._refresh_at
            if self._token_changed.wait(None if due is None else max(0.0, due - time.time())):
                self._token_changed.clear()  # a new due time (or close): look again
                continue
            if not self._connected.is_set():
                self._token_changed.wait(0.5)  # reconnecting: it brings a token of its own
                continue
            try:
                token = provider()
                self.request("refresh", token=token)
            except Exception as exc:  # the provider, the server (forbidden), a reconnect
                with self._lock:
                    delay, self._refresh_delay = (self._refresh_delay,
                                                  min(self._refresh_delay * 2, MAX_REFRESH_RETRY))
                    self._refresh_at = time.time() + delay
                if not self._closed.is_set():
                    log.warning("client %s: token refresh failed (retry in %gs): %s",
                                self.client_id, delay, exc)
                continue
            self._adopt(token)

    def _read_forever(self) -> None:
        ws = self._ws
        while True:
            code, reason = self._read_until_closed(ws)
            if self._closed.is_set():
                return
            _close(ws)
            self._fail_pending(NotConnected(f"connection lost ({code}: {reason or 'dropped'})"))
            retry = self.reconnect and code != CLOSE_POLICY
            self._set_state("reconnecting" if retry else "closed")
            self._emit("disconnect", Disconnected(code, reason, retry))
            if not retry:
                self._finish(reason or "connection lost", code)
                return
            new_ws = self._reconnect()
            if new_ws is None:
                return
            ws = new_ws

    def _read_until_closed(self, ws: websocket.WebSocket) -> tuple[int | None, str]:
        """Handle frames until the connection ends; its close code and reason."""
        while True:
            try:
                opcode, frame = ws.recv_data_frame()
            except (OSError, websocket.WebSocketException, AttributeError):
                return None, ""
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data or b""
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                return code, data[2:].decode(errors="replace")
            if opcode == websocket.ABNF.OPCODE_TEXT:
                for line in _text(frame.data).split("\n"):
                    self._handle(line)

    def _handle(self, line: str) -> None:
        try:
            if line.startswith(_MESSAGE_PREFIX):
                self._deliver(decode_message(line))
                return
            frame = msgspec.json.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("client %s: undecodable frame %.200r", self.client_id, line)
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind in ("result", "error"):
            with self._lock:
                reply = self._pending.get(frame.get("id"))  # type: ignore[arg-type]
            if reply is None:
                if kind == "error":
                    log.warning("client %s: server error %s: %s", self.client_id,
                                frame.get("code"), frame.get("message"))
                return
            with contextlib.suppress(InvalidStateError):  # already failed or timed out
                if kind == "result":
                    reply.set_result(frame)
                else:
                    reply.set_exception(ChatError.from_code(str(frame.get("code")),
                                                            str(frame.get("message", ""))))
        elif kind == "message":
            self._deliver(msgspec.convert(frame, Message))
        elif kind == "gap":
            self._emit("gap", frame.get("channel"), frame.get("reason", ""))
        elif kind in ("join", "leave"):
            self._emit("presence", frame)
        elif kind == "unsubscribed":  # e.g. a refreshed token no longer allows it
            channel = str(frame.get("channel"))
            with self._lock:
                self._channels.discard(channel)
                self._last_mid.pop(channel, None)
            log.info("client %s: unsubscribed from %s by the server: %s", self.client_id,
                     channel, frame.get("reason", ""))

    def _deliver(self, message: Message) -> None:
        self._last_mid[message.channel] = message.mid
        with self._inbox_ready:
            if len(self._inbox) >= self._inbox_size:
                self._inbox.popleft()
                self.dropped += 1
            self._inbox.append(message)
            self._inbox_ready.notify()
        self._emit("message", message)

    def _reconnect(self) -> websocket.WebSocket | None:
        """Connect again with backoff and rejoin channels; None when giving up."""
        delay = self.reconnect_delay
        last: Exception | None = None
        for attempt in range(1, self.reconnect_tries + 1):
            if self._closed.wait(delay):
                return None
            delay = min(delay * 2, self.max_reconnect_delay)
            try:
                ws = self._open()
            except ConnectFailed as exc:
                last = exc
                if exc.status is not None and 400 <= exc.status < 500:
                    break  # refused for good (bad token, forbidden): retrying won't help
                continue
            with self._lock:
                if self._closed.is_set():
                    _close(ws)
                    return None
                self._ws = ws
            lost = self._rejoin(ws)
            if lost is None:  # dropped again while rejoining
                _close(ws)
                continue
            self.reconnects += 1
            with self._lock:
                channels = sorted(self._channels)
            log.info("client %s reconnected (attempt %d)", self.client_id, attempt)
            self._set_state("connected")
            self._emit("reconnect", Reconnected(attempt, channels, lost, dict(self.welcome),
                                                dict(self.recovered)))
            return ws
        log.warning("client %s: giving up reconnecting: %s", self.client_id, last)
        self._finish(f"reconnect failed: {last}", None)
        return None

    def _rejoin(self, ws: websocket.WebSocket) -> dict[str, ChatError] | None:
        """Subscribe ``ws`` to every channel we were in; the channels refused.

        Runs on the reader thread before requests resume, so it reads the replies
        itself (messages arriving meanwhile are delivered as usual).
        """
        with self._lock:
            channels = sorted(self._channels)
        replies: dict[str, Future[dict[str, Any]]] = {}
        lost: dict[str, ChatError] = {}
        ws.settimeout(self.timeout)
        try:
            for channel in channels:
                fields = {"channel": channel}
                if channel in self._last_mid:  # recovery: replay what we missed
                    fields["since"] = self._last_mid[channel]
                _, replies[channel] = self._send_request("subscribe", fields)
            deadline = time.monotonic() + self.timeout
            while not all(r.done() for r in replies.values()):
                if time.monotonic() > deadline:
                    return None
                opcode, frame = ws.recv_data_frame()
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    return None
                for line in _text(frame.data).split("\n"):
                    self._handle(line)
        except (NotConnected, OSError, websocket.WebSocketException):
            return None
        finally:
            with contextlib.suppress(OSError, AttributeError):
                ws.settimeout(None)
        recovered: dict[str, bool] = {}
        for channel, reply in replies.items():
            error = reply.exception()
            if error is not None and getattr(error, "code", "") != "already_subscribed":
                lost[channel] = error  # type: ignore[assignment]
            elif error is None and "recovered" in reply.result():
                recovered[channel] = bool(reply.result()["recovered"])
        self.recovered = recovered
        with self._lock:
            self._channels -= set(lost)
            self._pending = {k: v for k, v in self._pending.items() if not v.done()}
        return lost


def _token_exp(token: str) -> float | None:
    """A JWT's ``exp``, read without verifying: only to time the refresh."""
    try:
        payload = token.split(".")[1]
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, msgspec.DecodeError):
        return None


def _refresh_lead(lifetime: float) -> float:
    """Seconds from now to refresh a token with ``lifetime`` seconds left: at 80% of it or
    30 s before it ends, whichever is earlier, but not before half of it."""
    return min(0.8 * lifetime, lifetime - min(REFRESH_AHEAD, lifetime / 2))


def _close(ws: websocket.WebSocket) -> None:
    """Close the socket at once (idempotent)."""
    ws.shutdown()  # type: ignore[no-untyped-call]


def _shutdown(ws: websocket.WebSocket) -> None:
    """Wake a thread blocked in ``recv`` on ``ws`` (``ws.abort`` skips closed sockets)."""
    sock = getattr(ws, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data


def _refusal(exc: websocket.WebSocketBadStatusException) -> str:
    body = exc.resp_body or b""
    reason = ""
    with contextlib.suppress(msgspec.DecodeError, AttributeError):
        reason = str(msgspec.json.decode(body).get("error", ""))
    return f"handshake refused ({exc.status_code}): {reason or body[:200]!r}"
