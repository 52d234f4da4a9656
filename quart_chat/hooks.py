"""Calling the plugins: one method per hook, each applying that hook's combination rule.

Nothing else in the server touches the plugin manager. pluggy is synchronous (a
coroutine is never None, so its ``firstresult`` would pick the first coroutine), so
every implementation is called here one by one, under ``hook_timeout``, its return
value checked against its spec, and its failure logged with the plugin's name.

Sync implementations of the hooks that run while clients are served run in a worker
thread, as Starlette runs sync endpoints, so a blocking call cannot freeze the other
clients (``async def`` runs on the loop at no extra cost). A hook still running after
``slow_hook_seconds`` is logged with its stack, and so is one that times out.
``trace_plugins`` (``QUART_CHAT_TRACE_PLUGINS=1``) logs every call with its outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec
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
#: Hooks whose sync implementations run on the event loop: nothing is served yet (or
#: any more) while they run, and they may need the loop (``asyncio.create_task``).
ON_THE_LOOP = frozenset({"startup", "shutdown"})
#: Worker threads for sync hooks (Starlette/AnyIO's default limit is 40 too).
SYNC_THREADS = 40


def _messages(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, Message) for item in value)


def _json(value: object) -> bool:
    try:
        msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return False
    return True


#: What each hook may return besides None, and a check; anything else is the plugin's
#: mistake, logged with its name and answered ``internal`` (never sent to a client).
RETURNS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "authenticate": ("a client id (str) or None", lambda value: isinstance(value, str)),
    "authorize": ("True, False or None", lambda value: isinstance(value, bool)),
    "call": ("a value JSON can carry (dict, list, str, number, bool) or None", _json),
    "filter_message": ("a Message or None", lambda value: isinstance(value, Message)),
    "history": ("a list of Message or None", _messages),
    "recover": ("a list of Message or None", _messages),
}


class HookFailed(InternalError):
    """A plugin raised, timed out or returned the wrong type; the client sees
    ``internal``, the log the details.

    :attr:`detail` names the plugin and its own message: what ``quart-chat serve``
    prints last when a ``startup`` fails.
    """

    def __init__(self, hook_name: str, detail: str) -> None:
        super().__init__(f"a server plugin failed ({hook_name})")
        self.detail = detail


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
        #: Seconds after which a running hook is logged with its stack; 0: never.
        self.slow_after = settings.slow_hook_seconds
        # The variable also traces servers built from explicit settings (tests, notebooks).
        self.trace = settings.trace_plugins or os.environ.get(
            "QUART_CHAT_TRACE_PLUGINS", "") not in ("", "0", "false")
        self._new_bot = new_bot
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._ignored_warned: set[tuple[str, str]] = set()

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
        """Every ``shutdown``; failures are logged. Then the worker threads are let go."""
        await self._all("shutdown", app=app)
        self.close()

    async def start_plugin(self, name: str, app: Quart) -> None:
        """Plugin ``name``'s own ``startup`` (a reloaded plugin); raises HookFailed."""
        for impl in self._impls("startup"):
            if impl.plugin_name == name:
                await self._call(impl, "startup", {"app": app})

    async def stop_plugin(self, name: str, app: Quart) -> None:
        """Plugin ``name``'s own ``shutdown`` (before it is reloaded); failures logged."""
        for impl in self._impls("shutdown"):
            if impl.plugin_name == name:
                with contextlib.suppress(Exception):  # logged by _call
                    await self._call(impl, "shutdown", {"app": app})

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
        """One implementation, under the timeout, its result checked; failures become
        HookFailed (``ChatError`` answers such as ``Rejected`` pass through)."""
        args = {name: kwargs[name] for name in impl.argnames}
        start = time.perf_counter()
        call = _Running(impl, hook_name)
        slow = None
        if self.slow_after:
            slow = asyncio.get_running_loop().call_later(self.slow_after, self._slow, call)
        failure: str | None = None  # for metrics: None, "failed" or "timeout"
        outcome = "passed"
        deadline = None
        try:
            # asyncio.timeout runs the hook in this task (no task per call, unlike
            # wait_for) and tells our deadline apart from the plugin's own timeouts.
            async with asyncio.timeout(self.timeout) as deadline:
                if hook_name in ON_THE_LOOP or inspect.iscoroutinefunction(impl.function):
                    value = impl.function(**args)
                else:
                    value = await self._in_thread(call, impl.function, args)
                if inspect.isawaitable(value):
                    call.coroutine = value
                    value = await value
            outcome = self._check(impl, hook_name, value)
        except ChatError as exc:
            failure = "failed" if isinstance(exc, HookFailed) else None
            outcome = "raised" if failure else f"rejected ({exc.code}: {exc})"
            raise
        except TimeoutError as exc:
            if deadline is not None and deadline.expired():
                failure, outcome = "timeout", "timed out"
                log.error("plugin %s: hook %s timed out after %.1fs; it was at:\n%s",
                          impl.plugin_name, hook_name, self.timeout, call.stack(exc))
                raise HookFailed(hook_name, f"plugin {impl.plugin_name}: {hook_name} timed "
                                 f"out after {self.timeout:g}s") from None
            failure, outcome = "failed", f"raised {exc!r}"
            raise self._raised(impl, hook_name, exc) from None
        except Exception as exc:
            failure, outcome = "failed", f"raised {exc!r}"
            raise self._raised(impl, hook_name, exc) from None
        finally:
            if slow is not None:
                slow.cancel()
            seconds = time.perf_counter() - start
            metrics.hook_called(impl.plugin_name, hook_name, seconds, failure)
            if self.trace:
                flag = " (SLOW)" if self.slow_after and seconds >= self.slow_after else ""
                log.info("trace: %s.%s took %.2f ms%s: %s", impl.plugin_name, hook_name,
                         seconds * 1000, flag, outcome)
        return value

    @staticmethod
    def _raised(impl: pluggy.HookImpl, hook_name: str, exc: Exception) -> HookFailed:
        """Log what an implementation raised; the HookFailed to raise instead.

        A ConfigError is the plugin's own clear message about a setting: logged without
        the traceback, which would only bury it.
        """
        name = impl.plugin_name
        if isinstance(exc, ConfigError):
            log.error("plugin %s: hook %s: %s", name, hook_name, exc)
            return HookFailed(hook_name, f"plugin {name}: {exc}")
        log.error("plugin %s: hook %s raised", name, hook_name, exc_info=exc)
        return HookFailed(hook_name, f"plugin {name}: {hook_name} raised "
                                     f"{type(exc).__name__}: {exc}")

    def _check(self, impl: pluggy.HookImpl, hook_name: str, value: object) -> str:
        """The trace outcome of a returned value; a value the spec does not allow is
        logged with the plugin's name and raises HookFailed."""
        if value is None:
            return "passed"
        expected = RETURNS.get(hook_name)
        if expected is None:
            if (impl.plugin_name, hook_name) not in self._ignored_warned:
                self._ignored_warned.add((impl.plugin_name, hook_name))
                log.warning("plugin %s: hook %s returned %s, which is ignored (it should "
                            "return None)", impl.plugin_name, hook_name, _shown(value))
            return "passed"
        if not expected[1](value):
            mistake = f"{hook_name} returned {_shown(value)}; expected {expected[0]}"
            log.error("plugin %s: hook %s", impl.plugin_name, mistake)
            raise HookFailed(hook_name, f"plugin {impl.plugin_name}: {mistake}")
        return "rejected (refused)" if value is False else "answered"

    async def _in_thread(self, call: _Running, function: Callable[..., Any],
                         args: dict[str, Any]) -> Any:
        """Run a sync implementation in a worker thread, in this task's context."""
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                SYNC_THREADS, thread_name_prefix="quart-chat-hook")
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, context.run, call.run, function, args)

    def _slow(self, call: _Running) -> None:
        log.warning("plugin %s: hook %s still running after %.1fs; it is at:\n%s",
                    call.impl.plugin_name, call.hook_name, self.slow_after, call.stack())

    def close(self) -> None:
        """Let go of the worker threads (a hung sync hook's thread is abandoned)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None


class _Running:
    """One hook call in progress, for the stack shown when it is slow or timed out."""

    __slots__ = ("coroutine", "hook_name", "impl", "thread")

    def __init__(self, impl: pluggy.HookImpl, hook_name: str) -> None:
        self.impl = impl
        self.hook_name = hook_name
        self.thread: int | None = None
        self.coroutine: object = None

    def run(self, function: Callable[..., Any], args: dict[str, Any]) -> Any:
        """In the worker thread: note which thread, then call."""
        self.thread = threading.get_ident()
        try:
            return function(**args)
        finally:
            self.thread = None

    def stack(self, timed_out: BaseException | None = None) -> str:
        """Where the call is now: its thread's frames, or its coroutine's await chain.

        After a timeout the coroutine has unwound, so the traceback of the cancellation
        that stopped it (the TimeoutError's cause) shows where it was.
        """
        frames: list[FrameType] = []
        if self.thread is not None:
            frame = sys._current_frames().get(self.thread)
            return "".join(traceback.format_stack(frame)) if frame else "(finished)"
        cancelled = timed_out.__cause__ or timed_out.__context__ if timed_out else None
        if cancelled is not None and cancelled.__traceback__ is not None:
            return "".join(traceback.format_tb(cancelled.__traceback__))
        awaiting = self.coroutine
        while awaiting is not None:
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
            if frame is None:
                break
            frames.append(frame)
            awaiting = (getattr(awaiting, "cr_await", None)
                        or getattr(awaiting, "gi_yieldfrom", None))
        summary = traceback.StackSummary.extract((frame, frame.f_lineno) for frame in frames)
        return "".join(summary.format()) or "(no frames)"


def _shown(value: object) -> str:
    """A returned value for a log line: its type and a bounded repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


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


def _checked_rewrite(before: Message, after: Message, plugin_name: str) -> Message:
    """A filter's Message, refused (logged, ``internal``) unless it only rewrites what a
    filter may rewrite (text, ts)."""
    changed = [name for name in FIXED_FIELDS if getattr(after, name) != getattr(before, name)]
    if changed:
        mistake = f"filter_message may not change {', '.join(changed)}"
        log.error("plugin %s: %s", plugin_name, mistake)
        raise HookFailed("filter_message", f"plugin {plugin_name}: {mistake}")
    return after
