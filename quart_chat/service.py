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
from .backends import open_backend
from .backends.base import restore_records
from .bots import Bot, bot_name
from .config import Settings
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
        backend = open_backend(settings, self.node_id)
        self.broker, self.store = backend.broker, backend.store
        self.hub = Hub(self.broker)
        self.pm = make_plugin_manager(settings, plugins)
        self.hooks = HookRunner(self.pm, settings.hook_timeout)
        self.sessions: set[Session] = set()
        self._filters = self.hooks.implemented("filter_message")
        self._background: set[asyncio.Task[None]] = set()
        #: Set once shutdown has begun closing sessions.
        self.stopping = False
        #: The node heartbeat and dead-node reaper (the Redis family; None in memory).
        self.heartbeat = backend.heartbeat(self) if backend.heartbeat else None
        if self.heartbeat is not None:
            self.pm.register(self.heartbeat, name="quart_chat.node_heartbeat")

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
            args = kwargs
            if "bot" in impl.argnames:
                bot = Bot(self, bot_name(impl.plugin, impl.plugin_name), trigger)
                args = {**kwargs, "bot": bot}
            with contextlib.suppress(Exception):  # logged by HookRunner.call
                await self.hooks.call(impl, hook_name, args)

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
