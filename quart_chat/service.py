"""The per-process chat service: owns the broker, store, hub, plugins and live sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Collection, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from . import metrics, protocol
from .bots import Bot, bot_name, clean_name
from .brokers import open_backend
from .config import Settings
from .errors import ChatError, UnknownMethod
from .hub import Hub
from .plugins import HookFailed, HookRunner, make_plugin_manager
from .protocol import Message

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
        self.broker, self.store = open_backend(settings, self.node_id)
        self.hub = Hub(self.broker)
        self.pm = make_plugin_manager(settings, plugins)
        self.hooks = HookRunner(self.pm, settings.hook_timeout)
        self.sessions: set[Session] = set()
        self._filters = self.hooks.implemented("filter_message")
        self._background: set[asyncio.Task[None]] = set()
        #: Set once shutdown has begun closing sessions.
        self.stopping = False
        #: The node heartbeat and dead-node reaper (Redis only; see presence.py).
        self.presence = _node_presence(self)

    async def start(self, app: Quart) -> None:
        """Connect the broker and start plugins; raises if either cannot start."""
        await self.broker.start(self.hub.deliver, self._on_gap)
        try:
            for call in reversed(self.pm.hook.startup.get_hookimpls()):
                await self.hooks.call(call, "startup", {"app": app})
        except BaseException:
            # No after_serving will run: release what started so far, then fail.
            await self.notify("shutdown", app=app)
            await self.broker.close()
            raise
        if not self.settings.jwt_secret:
            log.warning("no QUART_CHAT_JWT_SECRET: development mode, any client_id is accepted")
        if not self.settings.allowed_origins:
            log.warning("no QUART_CHAT_ALLOWED_ORIGINS: browser pages from any origin may connect")
        log.info("quart-chat ready (broker=%s, node=%s)", self.broker.name, self.node_id)

    async def stop(self, app: Quart) -> None:
        """Close every session with 1001, stop plugins, then the broker."""
        await self.close_sessions(protocol.CLOSE_GOING_AWAY, "server shutting down")
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.notify("shutdown", app=app)
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

    async def publish(self, message: Message, session: Session | None) -> Message:
        """Filter, publish through the broker, then run ``message_published`` hooks."""
        if self._filters:
            message = await self.filter(message, session)
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
                current = backlog.messages.popleft()
                await self.notify("message_published", message=current, trigger=current)
            if backlog.messages:
                log.error("message_published: more than %d bot messages answered one message; "
                          "%d not announced (bots with answer_bots=True in a loop?)",
                          MAX_BOT_CHAIN, len(backlog.messages))
        finally:
            backlog.open = False
            _announcing.reset(token)

    async def filter(self, message: Message, session: Session | None) -> Message:
        for impl in reversed(self.pm.hook.filter_message.get_hookimpls()):
            changed = await self.hooks.call(
                impl, "filter_message", {"message": message, "session": session}
            )
            if changed is not None:
                message = _checked_rewrite(message, changed, impl.plugin_name)
        return message

    async def notify(self, hook_name: str, trigger: Message | None = None, **kwargs: Any) -> None:
        """Call every implementation, giving each its own ``bot``; failures are logged."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            with contextlib.suppress(Exception):  # logged by HookRunner.call
                await self.hooks.call(impl, hook_name, self._with_bot(impl, kwargs, trigger))

    async def call(self, session: Session, method: str, params: dict[str, Any]) -> Any:
        """Answer a client's ``call``: the first ``call`` implementation returning non-None.

        Raises :class:`UnknownMethod` when none answers; ``Rejected``/``Forbidden`` from a
        plugin reach the caller as they are, other failures as ``internal`` (logged).
        """
        kwargs = {"session": session, "method": method, "params": params}
        for impl in reversed(self.pm.hook.call.get_hookimpls()):
            value = await self.hooks.call(impl, "call", self._with_bot(impl, kwargs))
            if value is not None:
                return value
        raise UnknownMethod(f"no function answers {method!r}")

    def _with_bot(self, impl: Any, kwargs: dict[str, Any],
                  trigger: Message | None = None) -> dict[str, Any]:
        """``kwargs``, plus the plugin's own ``bot`` when the implementation asks for one."""
        if "bot" not in impl.argnames:
            return kwargs
        return {**kwargs, "bot": Bot(self, bot_name(impl.plugin, impl.plugin_name), trigger)}

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
            await asyncio.wait_for(self._restore_records(), 2.0)
        self.hub.gap(channels)

    async def _restore_records(self) -> None:
        try:
            for session in list(self.sessions):
                await self.store.connect(session.id, session.client_id)
                for channel in list(session.channels):
                    await self.store.join(session.id, session.client_id, channel)
        except ChatError:
            log.warning("could not restore subscription records after reconnect", exc_info=True)

    async def health(self) -> dict[str, Any]:
        broker = await self.broker.health()
        return {
            "status": "ok" if broker["connected"] else "unavailable",
            "broker": self.broker.name,
            "node": self.node_id,
            "sessions": len(self.sessions),
            "channels": len(self.hub.members),
            **broker,
        }


def _node_presence(service: ChatService) -> Any:
    client = getattr(service.store, "redis", None)
    if client is None:
        return None
    from .presence import NodePresence

    presence = NodePresence(service, client)
    service.pm.register(presence, name="quart_chat.presence")
    return presence


#: Fields a filter may not change: the channel was authorized, the sender authenticated.
_FIXED_FIELDS = ("channel", "sender", "mid", "bot")


def _checked_rewrite(before: Message, after: object, plugin_name: str) -> Message:
    """A filter's result, refused (logged, ``internal``) unless it is a Message that only
    rewrites what a filter may rewrite (text, ts)."""
    if not isinstance(after, Message):
        log.error("plugin %s: filter_message returned %s, not a Message or None",
                  plugin_name, type(after).__name__)
        raise HookFailed("a server plugin failed (filter_message)")
    changed = [name for name in _FIXED_FIELDS if getattr(after, name) != getattr(before, name)]
    if changed:
        log.error("plugin %s: filter_message may not change %s", plugin_name, ", ".join(changed))
        raise HookFailed("a server plugin failed (filter_message)")
    return after
