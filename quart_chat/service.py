"""The per-process chat service: owns the broker, store, hub, plugins and live sessions,
and applies the rules of each operation a session asks for."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from . import metrics, protocol
from .backends import open_backend
from .backends.base import restore_records
from .bots import Bot, clean_name
from .config import Settings
from .control import Control
from .errors import (
    AlreadySubscribed,
    BadFrame,
    ChatError,
    Forbidden,
    HandshakeRefused,
    HistoryUnavailable,
    NotSubscribed,
    RateLimited,
    TooLarge,
    Unavailable,
    UnknownMethod,
)
from .handshake import token_identity
from .hooks import HookFailed, Hooks
from .hub import Hub
from .liveness import Liveness
from .plugin_settings import unknown_variables
from .plugins import describe, make_plugin_manager, origin_of
from .protocol import Message, RequestId, check_channel
from .reload import Reloader
from .tokens import expiry
from .version import __version__

if TYPE_CHECKING:
    from quart import Quart

    from .session import Session

log = logging.getLogger("quart_chat")

#: Most bot messages announced in answer to one message (a loop guard for answer_bots).
MAX_BOT_CHAIN = 100


class _Backlog:
    """Messages waiting for ``message_published`` in one announcing task."""

    def __init__(self, first: Message) -> None:
        self.messages: deque[Message] = deque([first])
        self.open = True


_announcing: ContextVar[_Backlog | None] = ContextVar("quart_chat_announcing", default=None)


class ChatService:
    """Everything one server process shares between its sessions."""

    def __init__(self, settings: Settings, plugins: Iterable[object] = ()) -> None:
        self.settings = settings
        self.node_id = secrets.token_hex(6)
        backend = open_backend(settings, self.node_id)
        self.broker, self.store = backend.broker, backend.store
        self.hub = Hub(self.broker)
        self.pm = make_plugin_manager(settings, plugins)
        self.hooks = Hooks(self.pm, settings, functools.partial(Bot, self))
        self.sessions: set[Session] = set()
        # Live local sessions per client id: the handshake's cap reads it, and scanning
        # every session per handshake made a reconnect storm quadratic.
        self._per_client: dict[str, int] = {}
        #: Closes sessions whose peer fell silent (one sweep for all of them).
        self.liveness = Liveness(settings)
        self._background: set[asyncio.Task[None]] = set()
        #: Set once shutdown has begun closing sessions.
        self.stopping = False
        #: Why a plugin's ``startup`` failed, in its own words (``quart-chat serve``
        #: prints it last).
        self.startup_failure: str | None = None
        #: The node heartbeat and dead-node reaper (the Redis family; None in memory).
        self.heartbeat = backend.heartbeat(self) if backend.heartbeat else None
        if self.heartbeat is not None:
            self.pm.register(self.heartbeat, name="quart_chat.node_heartbeat")
        #: Requests to every process (the server API's cross-process methods).
        self.control = Control(self)
        self.started_at = time.time()

    async def start(self, app: Quart) -> None:
        """Connect the broker and start plugins; raises if either cannot start."""
        await self.broker.start(self.hub.deliver, self._on_gap)
        for name, hooks in describe(self.pm):
            log.info("plugin %s loaded: %s; hooks: %s", name, origin_of(self.pm, name),
                     ", ".join(hooks) or "(none)")
        try:
            await self.control.start()
            await self.hooks.startup(app)  # on failure it has run every shutdown
        except HookFailed as exc:
            self.startup_failure = exc.detail
            await self.broker.close()
            raise
        except BaseException:
            # No after_serving will run: release what started so far, then fail.
            await self.broker.close()
            raise
        for warning in unknown_variables():  # plugins read their settings by now
            log.warning("%s", warning)
        if self.settings.reload:
            reloader = Reloader(self.pm, self.hooks, app, self.settings.plugins_dir)
            task = asyncio.create_task(reloader.run(), name="plugin reload")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if not self.settings.tokens_required:
            log.warning("no token key (QUART_CHAT_JWT_SECRET, _JWT_PUBLIC_KEY or _JWKS_URL): "
                        "development mode, any client_id is accepted")
        if not self.settings.allowed_origins:
            log.warning("no QUART_CHAT_ALLOWED_ORIGINS: browser pages from any origin may connect")
        log.info("quart-chat ready (broker=%s, node=%s)", self.broker.name, self.node_id)

    async def stop(self, app: Quart) -> None:
        """Close every session with 1001, stop plugins, then the broker."""
        await self.close_sessions(protocol.CLOSE_GOING_AWAY, "server shutting down")
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.control.stop()
        await self.hooks.shutdown(app)
        await self.broker.close()

    async def close_sessions(self, code: int, reason: str) -> None:
        """Ask every session to close and wait (bounded) until they have cleaned up."""
        self.stopping = True
        sessions = list(self.sessions)
        for session in sessions:
            session.close(code, reason)
        waits = [session.finished.wait() for session in sessions]
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.settings.shutdown_timeout)

    # -- a session's life -------------------------------------------------------------

    def release(self, session: Session) -> None:
        """Give back the connection slot :func:`~quart_chat.handshake.admit` reserved for a
        session that never ran (its client left during the handshake); idempotent."""
        task = asyncio.create_task(self._release(session))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(self, session: Session) -> None:
        try:
            await self.store.disconnect(session.id, session.client_id, ())
        except Unavailable:
            log.warning("session %s: store unreachable; its connection slot stays taken "
                        "until the client id's record is cleaned", session.id)

    async def record_session(self, session: Session) -> None:
        """Record the session in the store and list it under this process (for a
        reaper, should the process die)."""
        try:
            await self.store.connect(session.id, session.client_id)
        except Unavailable:
            log.warning("session %s: store unreachable at connect", session.id)
        if self.heartbeat is not None:
            await self.heartbeat.list_session(session)

    async def session_opened(self, session: Session) -> None:
        """Run ``client_connected``."""
        await self.hooks.client_connected(session)

    async def session_leaving(self, session: Session) -> None:
        """Take the session out of every channel and the store (best effort), and tell
        the channels (join/leave). ``session.channels`` is kept: ``client_disconnected``
        hooks read where the session was."""
        channels = sorted(session.channels)
        try:
            for channel in channels:
                await self.hub.leave(session, channel)
            if self.stopping and self.heartbeat is not None:
                # a thousand sessions each cleaning up alone would queue for the command
                # pool past the shutdown timeout; the node heartbeat sweeps them in bulk
                session.records_left = True
            else:
                await self.store.disconnect(session.id, session.client_id, channels)
        except Exception:
            session.records_left = True
            log.warning("session %s: cleanup incomplete", session.id, exc_info=True)
        await self.membership("leave", channels, session.client_id, session.id)

    async def session_closed(self, session: Session) -> None:
        """Run ``client_disconnected`` for a session that has ended."""
        await self.hooks.client_disconnected(session)

    # -- the operations a client asks for ----------------------------------------------

    async def subscribe(
        self, session: Session, channel: str, *, since: str | None = None,
        request_id: RequestId = None,
    ) -> None:
        """Join ``channel`` and queue the result frame (``request_id``) to the session.

        With ``since``, the messages missed after that message id come right after the
        result, before any live one (see :mod:`quart_chat.recovery`). ``client_subscribed``
        runs once the result is queued.
        """
        channel = check_channel(channel)
        if channel in session.channels:
            raise AlreadySubscribed(f"already subscribed to {channel!r}")
        limit = self.settings.max_channels_per_session
        if len(session.channels) >= limit:
            raise Forbidden(f"subscription limit reached: at most {limit} channels per session")
        await self._authorize(session, "subscribe", channel)
        recovery = session.recovering() if since is not None else None
        if recovery is not None:
            recovery.hold(channel)  # live frames wait until the missed ones are out
        try:
            await self._join(session, channel)
        except BaseException:
            if recovery is not None:
                recovery.abandon(channel)
            raise
        if since is None:
            session.deliver(protocol.result(request_id))
        else:
            await self._recover(session, request_id, channel, since)
        await self.membership("join", (channel,), session.client_id, session.id)
        await self.hooks.client_subscribed(session, channel)

    async def _join(self, session: Session, channel: str) -> None:
        """Join ``channel`` in the hub and the store; neither keeps it if one fails. The
        one path of every subscription, the client's and the server API's."""
        await self.hub.join(session, channel)
        session.channels.add(channel)
        try:
            await self.store.join(session.id, session.client_id, channel)
        except Unavailable:
            session.channels.discard(channel)
            await self.hub.leave(session, channel)
            raise

    async def _leave(self, session: Session, channel: str) -> None:
        """Leave ``channel`` in the hub and the store (the store best effort)."""
        session.channels.discard(channel)
        if session.recovery is not None:
            session.recovery.forget(channel)
        await self.hub.leave(session, channel)
        try:
            await self.store.leave(session.id, session.client_id, channel)
        except Unavailable:
            log.warning("session %s: store unreachable leaving %s", session.id, channel)

    async def _recover(
        self, session: Session, request_id: RequestId, channel: str, since: str
    ) -> None:
        """Answer a ``subscribe`` with ``since``: the result, the missed messages (when a
        plugin returned all of them), then the live ones held meanwhile."""
        read_at = time.time()
        limit = min(self.settings.max_recovery, max(1, self.settings.outbound_queue // 2))
        missed = await self.hooks.recover(channel, since, limit + 1)
        recovered = missed is not None and len(missed) <= limit
        replay = missed if recovered and missed is not None else []
        session.deliver(protocol.result(request_id, {"recovered": recovered,
                                                     "missed": len(replay)}))
        session.recovering().release(channel, replay, read_at, session.deliver)

    async def unsubscribe(self, session: Session, channel: str | None) -> list[str]:
        """Leave ``channel`` (None: every channel); the channels the session keeps."""
        if channel is None:
            leaving = sorted(session.channels)
        else:
            channel = check_channel(channel)
            if channel not in session.channels:
                raise NotSubscribed(f"not subscribed to {channel!r}")
            leaving = [channel]
        for name in leaving:
            await self._leave(session, name)
        await self.membership("leave", leaving, session.client_id, session.id)
        for name in leaving:
            await self.hooks.client_unsubscribed(session, name)
        return sorted(session.channels)

    async def publish(self, session: Session, channel: str, text: str) -> Message:
        """A client's ``publish``: checked, authorized, then :meth:`publish_message`."""
        channel = check_channel(channel)
        if channel not in session.channels:
            raise NotSubscribed(f"subscribe to {channel!r} before publishing to it")
        limit = self.settings.max_text_length
        if len(text) > limit:
            raise TooLarge(f"text is longer than {limit} characters")
        if not session.publishes.take():
            raise RateLimited(f"more than {self.settings.publish_rate:g} publishes per second")
        await self._authorize(session, "publish", channel)
        ts = time.time()
        message = Message(channel=channel, sender=session.client_id, text=text, ts=ts,
                          mid=protocol.new_mid(ts))
        return await self.publish_message(message, session)

    @staticmethod
    def channels(session: Session) -> list[str]:
        """The channels ``session`` is subscribed to, sorted."""
        return sorted(session.channels)

    async def presence(self, session: Session, channel: str) -> list[str]:
        """A client's ``presence``: who is in a channel, for a client allowed to read it.

        The member list is the channel's, so it follows the decision for subscribing
        (the token's ``channels`` claim, then ``authorize`` with ``"subscribe"``, as
        ``history`` does): a plugin that switches on ``action`` meets no new value.
        """
        channel = check_channel(channel)
        await self._authorize(session, "subscribe", channel)
        return await self.channel_presence(channel)

    async def channel_presence(self, channel: str) -> list[str]:
        """Client ids with a session in ``channel`` on any process, sorted (unchecked:
        for callers with their own authority, such as the server's own code)."""
        return await self.store.presence(check_channel(channel))

    async def history(
        self, session: Session | None, channel: str, limit: int, before: str | None
    ) -> list[Message]:
        """Up to ``limit`` messages of ``channel``, newest first, from the plugins.

        ``session`` None is the server API, trusted with its key: nothing to authorize.
        """
        channel = check_channel(channel)
        if not 1 <= limit <= self.settings.max_history:
            raise BadFrame(f"limit must be between 1 and {self.settings.max_history}")
        if session is not None:
            await self._authorize(session, "subscribe", channel)
        messages = await self.hooks.history(channel, limit, before)
        if messages is None:
            raise HistoryUnavailable("no plugin keeps history for this channel")
        return messages[:limit]

    async def call(self, session: Session, method: str, params: dict[str, Any]) -> Any:
        """A client's ``call``: the answer of the first plugin function for ``method``.

        Raises :class:`UnknownMethod` when no plugin answers; ``Rejected``/``Forbidden``
        from a plugin reach the caller as they are, other failures as ``internal``.
        """
        value = await self.hooks.call(session, method, params)
        if value is None:
            raise UnknownMethod(f"no function answers {method!r}")
        return value

    async def refresh(self, session: Session, token: str) -> None:
        """Adopt a new token for ``session``: verified as at the handshake, same ``sub``.

        Its ``exp`` replaces the session's expiry and its ``channels`` claim applies from
        now: each subscribed channel it no longer allows is left, with an ``unsubscribed``
        frame. A refused token changes nothing (the old expiry still closes the session).
        """
        if session.claims is None:
            raise Forbidden("nothing to refresh: this session was not opened with a token"
                            if self.settings.tokens_required else
                            "nothing to refresh: the server has no token key (development mode)")
        try:
            identity = await token_identity(self.settings, token)
        except HandshakeRefused as exc:
            raise (Unavailable if exc.status == 503 else Forbidden)(exc.reason) from None
        if identity.client_id != session.client_id:
            raise Forbidden(f"the token is for another client id ({identity.client_id!r})")
        session.claims, session.allowed_channels = identity.claims, identity.channels
        session.expire_at(expiry(identity.claims))
        if identity.channels is None:
            return
        for channel in sorted(session.channels):
            if not channel_allowed(identity.channels, channel):
                await self.unsubscribe(session, channel)
                session.deliver(protocol.unsubscribed(channel, "the refreshed token does not "
                                                               "allow this channel"))

    async def _authorize(self, session: Session, action: str, channel: str) -> None:
        """The token's ``channels`` claim, then the ``authorize`` hook; raise Forbidden."""
        if session.allowed_channels is not None and not channel_allowed(
            session.allowed_channels, channel
        ):
            raise Forbidden(f"your token does not allow {action} on {channel!r}")
        if not await self.hooks.authorize(session, action, channel):
            raise Forbidden(f"not allowed to {action} to {channel!r}")

    # -- messages from clients and bots ------------------------------------------------

    async def publish_message(self, message: Message, session: Session | None) -> Message:
        """Filter, publish through the broker, then run ``message_published`` hooks."""
        message = await self.hooks.filter_message(message, session)
        await self.broker.publish(message.channel, protocol.encode_message(message))
        metrics.published()
        await self._announce(message)
        return message

    async def _announce(self, message: Message) -> None:
        """Run ``message_published`` for ``message``, in publish order.

        A bot answering from inside ``message_published`` publishes at once, but its
        message is announced only after every plugin saw the message it answers, so
        persistence stores question before answer. The queue is per task (a context
        variable), which also turns bot chains into a bounded loop instead of recursion.
        """
        backlog = _announcing.get()
        if backlog is not None and backlog.open:
            backlog.messages.append(message)
            return
        backlog = _Backlog(message)
        token = _announcing.set(backlog)
        try:
            for _ in range(MAX_BOT_CHAIN + 1):
                if not backlog.messages:
                    break
                await self.hooks.message_published(backlog.messages.popleft())
            if backlog.messages:
                log.error("message_published: more than %d bot messages answered one message; "
                          "%d not announced (bots with answer_bots=True in a loop?)",
                          MAX_BOT_CHAIN, len(backlog.messages))
        finally:
            backlog.open = False
            _announcing.reset(token)

    def bot(self, name: str) -> Bot:
        """A bot publishing as ``name``, for code outside hooks (routes, tasks, notebooks).

        Its messages go through ``filter_message`` and ``message_published`` like every
        bot's. ``name`` is cleaned into a valid sender name.
        """
        return Bot(self, clean_name(name))

    async def membership(self, kind: str, channels: Iterable[str], client_id: str,
                         session_id: str) -> None:
        """Tell the subscribers of ``channels``, on every process, that a session
        ``"join"``-ed or ``"leave"``-s them (when ``join_leave`` is on).

        The frame travels through the broker like a message but is not one: no filters,
        no ``message_published``, so history plugins never store it. Best effort: an
        unreachable broker is logged and the subscribe, unsubscribe or close that caused
        it goes on.
        """
        if not self.settings.join_leave:
            return
        for channel in channels:
            try:
                await self.broker.publish(
                    channel, protocol.membership(kind, channel, client_id, session_id))
            except ChatError as exc:
                log.warning("could not send %s of session %s in %s: %s",
                            kind, session_id, channel, exc)

    def _on_gap(self, channels: Collection[str]) -> None:
        """The broker reconnected: warn subscribers and restore this process's records
        (a restarted Redis has forgotten them)."""
        task = asyncio.create_task(self._restore_then_gap(channels))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restore_then_gap(self, channels: Collection[str]) -> None:
        # Records first (bounded), then the notice: a client that reacts to ``gap`` by
        # asking for presence or history already sees this process's sessions again.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(restore_records(self.store, self.sessions), 2.0)
        self.hub.gap(channels)

    # -- control actions: this process's part of a request to every process ---------------

    async def act(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one control action (``quart_chat.control``) on this process only."""
        actions: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
            "disconnect": self._disconnect_client,
            "subscribe": self._subscribe_client,
            "unsubscribe": self._unsubscribe_client,
            "channels": self._local_channels,
            "info": self._info,
        }
        if op not in actions:
            raise UnknownMethod(f"no control action {op!r}")
        return await actions[op](**args)

    def session_started(self, session: Session) -> None:
        """List ``session`` as live in this process."""
        self.sessions.add(session)
        self._per_client[session.client_id] = self._per_client.get(session.client_id, 0) + 1

    def session_ended(self, session: Session) -> None:
        """Take ``session`` off the live list (idempotent)."""
        if session in self.sessions:
            self.sessions.discard(session)
            left = self._per_client[session.client_id] - 1
            if left:
                self._per_client[session.client_id] = left
            else:
                del self._per_client[session.client_id]

    def local_sessions(self, client_id: str) -> int:
        """How many live sessions ``client_id`` has in this process."""
        return self._per_client.get(client_id, 0)

    def _sessions_of(self, client_id: str) -> list[Session]:
        return [session for session in self.sessions if session.client_id == client_id]

    async def _disconnect_client(self, client_id: str) -> dict[str, Any]:
        """Close the client's sessions here (4002) and wait, bounded, until they ended."""
        sessions = self._sessions_of(client_id)
        for session in sessions:
            session.close(protocol.CLOSE_DISCONNECTED, "disconnected by the server")
        waits = [session.finished.wait() for session in sessions]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.settings.shutdown_timeout)
        return {"sessions": len(sessions)}

    async def _subscribe_client(self, client_id: str, channel: str) -> dict[str, Any]:
        """Subscribe the client's sessions here, as their own ``subscribe`` would (no
        result frame; trusted, so not authorized). Sessions already in the channel or at
        ``max_channels_per_session`` are skipped; the count is of those subscribed."""
        limit = self.settings.max_channels_per_session
        joined = 0
        for session in self._sessions_of(client_id):
            if channel in session.channels or len(session.channels) >= limit:
                continue
            await self._join(session, channel)
            if session not in self.sessions:  # it ended meanwhile: its cleanup is past
                await self._leave(session, channel)
                continue
            await self.membership("join", (channel,), session.client_id, session.id)
            await self.hooks.client_subscribed(session, channel)
            joined += 1
        return {"sessions": joined}

    async def _unsubscribe_client(self, client_id: str, channel: str) -> dict[str, Any]:
        """Unsubscribe the client's sessions here, as their own ``unsubscribe`` would."""
        sessions = [s for s in self._sessions_of(client_id) if channel in s.channels]
        for session in sessions:
            await self._leave(session, channel)
            # Told, so that a client does not subscribe again on its next reconnect.
            session.deliver(protocol.unsubscribed(channel, "unsubscribed by the server"))
            await self.membership("leave", (channel,), session.client_id, session.id)
            await self.hooks.client_unsubscribed(session, channel)
        return {"sessions": len(sessions)}

    async def _local_channels(self) -> dict[str, Any]:
        return {"channels": sorted(name for name, members in self.hub.members.items()
                                   if members)}

    async def _info(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "clients": len({session.client_id for session in self.sessions}),
            "channels": sum(1 for members in self.hub.members.values() if members),
            "broker": self.broker.name,
            "pid": os.getpid(),
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
        }

    async def health(self) -> dict[str, Any]:
        broker = await self.broker.health()
        return {
            **broker,  # first: ``channels`` below is the clients' (the broker's count
            # includes its reserved control channels)
            "status": "ok" if broker["connected"] else "unavailable",
            "broker": self.broker.name,
            "node": self.node_id,
            "sessions": len(self.sessions),
            "channels": len(self.hub.members),
        }


def channel_allowed(patterns: tuple[str, ...], channel: str) -> bool:
    """Does a token's ``channels`` claim allow ``channel``? Exact names; ``prefix*`` globs."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if channel.startswith(pattern[:-1]):
                return True
        elif channel == pattern:
            return True
    return False
