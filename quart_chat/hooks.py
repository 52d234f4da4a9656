"""Calling the plugins: one method per hook, each applying that hook's combination rule.

Nothing else in the server touches the plugin manager. pluggy is synchronous (a
coroutine is never None, so its ``firstresult`` would pick the first coroutine), so
every implementation is called here one by one, awaited under ``hook_timeout``, and
its failure logged with the plugin's name. Set ``QUART_CHAT_TRACE_PLUGINS=1`` to log
every hook call with its duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pluggy

from . import metrics
from .bots import Bot, bot_name
from .errors import ChatError, ConfigError, InternalError
from .protocol import Message

if TYPE_CHECKING:
    from quart import Quart
    from quart.wrappers import Websocket

    from .backends.node_heartbeat import LostSession
    from .config import Settings
    from .session import Session

# The name operators already filter on: these lines are about plugins.
log = logging.getLogger("quart_chat.plugins")

#: Fields a filter may not change: the channel was authorized, the sender authenticated.
FIXED_FIELDS = ("channel", "sender", "mid", "bot")


class HookFailed(InternalError):
    """A plugin raised or timed out; the client sees ``internal``, the log the details."""


class Hooks:
    """The server's one way to call plugins (see :mod:`quart_chat.hookspecs`).

    ``new_bot(name, trigger)`` makes the ``bot`` handed to hooks that ask for one.
    Implementations are looked up on every call, so plugins registered after this
    object was built (the node heartbeat) take part.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        settings: Settings,
        new_bot: Callable[[str, Message | None], Bot],
    ) -> None:
        self._pm = pm
        self.timeout = settings.hook_timeout
        self.trace = os.environ.get("QUART_CHAT_TRACE_PLUGINS", "") not in ("", "0")
        self._new_bot = new_bot

    # -- lifecycle: all run ------------------------------------------------------------

    async def startup(self, app: Quart) -> None:
        """Every ``startup`` in order; the first failure runs every ``shutdown`` and raises
        (a server whose plugins cannot start must not serve)."""
        try:
            for impl in self._impls("startup"):
                await self._call(impl, "startup", {"app": app})
        except BaseException:
            await self.shutdown(app)
            raise

    async def shutdown(self, app: Quart) -> None:
        """Every ``shutdown``; failures are logged."""
        await self._all("shutdown", app=app)

    # -- connection --------------------------------------------------------------------

    async def authenticate(self, request: Websocket) -> object:
        """The first non-None client id (unchecked: the handshake validates it).

        Raises what the plugin raised if it is a :class:`ChatError` (``Forbidden``), else
        :class:`HookFailed`.
        """
        return await self._first("authenticate", request=request)

    async def client_connected(self, session: Session) -> None:
        """Every ``client_connected``; failures are logged."""
        await self._all("client_connected", session=session)

    async def client_disconnected(self, session: Session | LostSession) -> None:
        """Every ``client_disconnected``; failures are logged."""
        await self._all("client_disconnected", session=session)

    async def authorize(self, session: Session, action: str, channel: str) -> bool:
        """False at the first implementation that returns False; the rest are not asked.

        A refusal cannot be overturned, so stopping there is both the rule ("any False
        refuses") and the cheap way to apply it. Failures raise :class:`HookFailed`.
        """
        kwargs = {"session": session, "action": action, "channel": channel}
        for impl in self._impls("authorize"):
            if await self._call(impl, "authorize", kwargs) is False:
                return False
        return True

    async def client_subscribed(self, session: Session, channel: str) -> None:
        """Every ``client_subscribed``, each with its own bot; failures are logged."""
        await self._all("client_subscribed", session=session, channel=channel)

    async def client_unsubscribed(self, session: Session, channel: str) -> None:
        """Every ``client_unsubscribed``; failures are logged."""
        await self._all("client_unsubscribed", session=session, channel=channel)

    # -- message -----------------------------------------------------------------------

    async def filter_message(self, message: Message, session: Session | None) -> Message:
        """The filter chain: each filter sees the previous one's output.

        A result that is not a Message, or that changes a field in :data:`FIXED_FIELDS`,
        is logged and raises :class:`HookFailed`; ``Rejected`` passes through.
        """
        for impl in self._impls("filter_message"):
            changed = await self._call(
                impl, "filter_message", {"message": message, "session": session}
            )
            if changed is not None:
                message = _checked_rewrite(message, changed, impl.plugin_name)
        return message

    async def message_published(self, message: Message) -> None:
        """Every ``message_published``, each with its own bot triggered by ``message``."""
        await self._all("message_published", trigger=message, message=message)

    # -- persistence: first non-None wins ----------------------------------------------

    async def history(self, channel: str, limit: int, before: str | None) -> list[Message] | None:
        """The first non-None answer; None when no plugin keeps the channel's history."""
        found = await self._first("history", channel=channel, limit=limit, before=before)
        return None if found is None else list(found)

    async def recover(self, channel: str, since: str, limit: int) -> list[Message] | None:
        """The first non-None answer; None also when a plugin failed (it was logged)."""
        try:
            found = await self._first("recover", channel=channel, since=since, limit=limit)
        except ChatError:
            return None
        return None if found is None else list(found)

    # -- triggers: declared once, while the app is built; every list is collected -----

    def register_routes(self, app: Quart) -> list[tuple[str, Any]]:
        """(plugin name, entry) for every route every plugin returned, in call order.

        Each implementation gets its own bot. Unchecked entries (see
        :mod:`quart_chat.triggers`); a plugin that raises or is ``async`` stops startup.
        """
        declared = []
        for impl in self._impls("register_routes"):
            bot = self._new_bot(bot_name(impl.plugin, impl.plugin_name), None)
            for entry in _declared(impl, {"app": app, "bot": bot}):
                declared.append((impl.plugin_name, entry))
        return declared

    def register_timers(self) -> list[tuple[str, str, Any]]:
        """(plugin name, bot name, entry) for every timer every plugin returned."""
        return [(impl.plugin_name, bot_name(impl.plugin, impl.plugin_name), entry)
                for impl in self._impls("register_timers") for entry in _declared(impl, {})]

    # -- functions: first non-None wins ------------------------------------------------

    async def call(self, session: Session, method: str, params: dict[str, Any]) -> Any:
        """The first non-None answer of a plugin function for ``method`` (each plugin
        with its own bot); None when no plugin has one. ``Rejected``/``Forbidden`` pass
        through; other failures raise :class:`HookFailed`."""
        return await self._first("call", session=session, method=method, params=params)

    # -- the machinery -----------------------------------------------------------------

    def _impls(self, hook_name: str) -> Iterator[pluggy.HookImpl]:
        """Implementations in pluggy's call order (last registered first, try* honoured)."""
        caller: pluggy.HookCaller = getattr(self._pm.hook, hook_name)
        return reversed(caller.get_hookimpls())

    async def _first(self, hook_name: str, **kwargs: Any) -> Any:
        for impl in self._impls(hook_name):
            value = await self._call(impl, hook_name, self._with_bot(impl, kwargs))
            if value is not None:
                return value
        return None

    async def _all(self, hook_name: str, trigger: Message | None = None, **kwargs: Any) -> None:
        """Every implementation, each given its own ``bot`` if it asks; failures logged."""
        for impl in self._impls(hook_name):
            with contextlib.suppress(Exception):  # logged by _call
                await self._call(impl, hook_name, self._with_bot(impl, kwargs, trigger))

    def _with_bot(self, impl: pluggy.HookImpl, kwargs: dict[str, Any],
                  trigger: Message | None = None) -> dict[str, Any]:
        """``kwargs``, plus the plugin's own ``bot`` when the implementation asks for one."""
        if "bot" not in impl.argnames:
            return kwargs
        return {**kwargs, "bot": self._new_bot(bot_name(impl.plugin, impl.plugin_name), trigger)}

    async def _call(self, impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any]) -> Any:
        """One implementation, awaited with the timeout; failures become HookFailed."""
        args = {name: kwargs[name] for name in impl.argnames}
        start = time.perf_counter()
        outcome = None
        deadline = None
        try:
            value = impl.function(**args)
            if inspect.isawaitable(value):
                # asyncio.timeout runs the hook in this task (no task per call, unlike
                # wait_for) and tells our deadline apart from the plugin's own timeouts.
                async with asyncio.timeout(self.timeout) as deadline:
                    value = await value
        except ChatError:
            raise
        except TimeoutError:
            if deadline is None or not deadline.expired():
                outcome = "failed"
                log.exception("plugin %s: hook %s raised", impl.plugin_name, hook_name)
            else:
                outcome = "timeout"
                log.error("plugin %s: hook %s timed out after %.1fs",
                          impl.plugin_name, hook_name, self.timeout)
            raise HookFailed(f"a server plugin failed ({hook_name})") from None
        except Exception:
            outcome = "failed"
            log.exception("plugin %s: hook %s raised", impl.plugin_name, hook_name)
            raise HookFailed(f"a server plugin failed ({hook_name})") from None
        finally:
            metrics.hook_called(impl.plugin_name, hook_name, time.perf_counter() - start, outcome)
            if self.trace:
                log.info("trace: %s.%s took %.2f ms", impl.plugin_name, hook_name,
                         (time.perf_counter() - start) * 1000)
        return value


def _declared(impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> list[Any]:
    """What a ``register_*`` implementation returned (None: nothing), called at once: they
    run while the app is built, before any event loop serves; failures stop startup."""
    hook = impl.function.__name__
    try:
        value = impl.function(**{name: kwargs[name] for name in impl.argnames})
    except Exception as exc:
        raise ConfigError(f"plugin {impl.plugin_name}: {hook} raised {exc!r}") from exc
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise ConfigError(f"plugin {impl.plugin_name}: {hook} must be a plain def")
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"plugin {impl.plugin_name}: {hook} must return a list, "
                          f"not {type(value).__name__}")
    return list(value)


def _checked_rewrite(before: Message, after: object, plugin_name: str) -> Message:
    """A filter's result, refused (logged, ``internal``) unless it is a Message that only
    rewrites what a filter may rewrite (text, ts)."""
    if not isinstance(after, Message):
        log.error("plugin %s: filter_message returned %s, not a Message or None",
                  plugin_name, type(after).__name__)
        raise HookFailed("a server plugin failed (filter_message)")
    changed = [name for name in FIXED_FIELDS if getattr(after, name) != getattr(before, name)]
    if changed:
        log.error("plugin %s: filter_message may not change %s", plugin_name, ", ".join(changed))
        raise HookFailed("a server plugin failed (filter_message)")
    return after
