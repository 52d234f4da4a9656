"""Every hook quart-chat calls, and the two pluggy markers. Nothing else lives here.

The hook names and signatures are a public contract. Any implementation may be a plain
function or an ``async def`` (hence the ``MaybeAwaitable`` return types): the server
calls each implementation itself, awaits it and applies the combination rule declared
here (see :mod:`quart_chat.hooks`). A plain function runs in a worker thread (except
``startup`` and ``shutdown``, which run on the event loop), so a blocking one cannot
freeze other clients; an ``async def`` runs on the loop and must not block. A hook that
raises, runs past ``hook_timeout`` or returns what its spec does not allow is logged
with its plugin's name; it never takes down a session or the server.

``firstresult=True`` marks the hooks where the first non-None answer wins. pluggy alone
cannot apply that rule to ``async def`` implementations (a coroutine is never None), so
the marker documents the rule and :mod:`quart_chat.hooks` applies it.

An implementation may accept fewer arguments than the spec lists (pluggy passes only
the ones it names), so ``def authorize(action, channel)`` is fine.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar, Union

import pluggy

if TYPE_CHECKING:
    from quart import Quart
    from quart.wrappers import Websocket

    from .bots import Bot
    from .protocol import Message
    from .session import Session
    from .triggers import Route, TimerEntry

T = TypeVar("T")
#: What an implementation returns: the value, or (``async def``) an awaitable of it.
MaybeAwaitable = Union[T, Awaitable[T]]  # noqa: UP007 - a generic alias needs Union

PROJECT = "quart_chat"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- lifecycle ---------------------------------------------------------------------------


@hookspec
def startup(app: Quart) -> MaybeAwaitable[None]:
    """Open the plugin's own resources (connections, files, background tasks).

    Runs once per server process, before the first connection is accepted, in pluggy's
    call order; ``async def`` is allowed. The return value is ignored. Every
    implementation runs until one raises: a plugin that raises here stops startup (every
    plugin's ``shutdown`` then runs), because a server whose plugins cannot start should
    not serve.
    """


@hookspec
def shutdown(app: Quart) -> MaybeAwaitable[None]:
    """Close what :func:`startup` opened.

    Runs once per server process after every session was closed; ``async def`` is
    allowed. Every implementation runs: errors and timeouts are logged and the next
    plugin's shutdown runs regardless. The return value is ignored. It also runs when
    another plugin's ``startup`` failed, so it may find its own resources never opened:
    check before closing.
    """


# -- connection --------------------------------------------------------------------------


@hookspec(firstresult=True)
def authenticate(request: Websocket) -> MaybeAwaitable[str | None]:
    """Decide the client id of a WebSocket handshake, before it is accepted.

    ``request`` is Quart's websocket request (headers, ``args``, ``cookies``...).
    Return a client id (1-64 of ``A-Z a-z 0-9 _ . -``) to accept the handshake as that
    client, or ``None`` to defer to the next plugin and finally to the built-in token /
    ``client_id`` handling. Raise :class:`quart_chat.Forbidden` to refuse the handshake
    (HTTP 403 with your message); any other failure is HTTP 500. First non-None result
    wins: the plugins after it are not asked. ``async def`` is allowed.
    """


@hookspec
def client_connected(session: Session, bot: Bot) -> MaybeAwaitable[None]:
    """A session was accepted (``session.client_id``, ``session.id``).

    Runs after the welcome frame was queued. Every implementation runs, in pluggy's call
    order, each with its own ``bot`` (publishing as the plugin); return values are
    ignored and failures are logged. ``async def`` is allowed. Use it for greetings,
    audit and presence side effects.
    """


@hookspec
def client_disconnected(session: Session, bot: Bot) -> MaybeAwaitable[None]:
    """A session ended, for any reason (client left, slow consumer, shutdown).

    Runs after the session was removed from every channel; ``session.channels`` still
    names the channels it was in, so ``bot`` (publishing as this plugin) can say goodbye
    there. Every implementation runs, each with its own ``bot``; return values are
    ignored and failures are logged. ``async def`` is allowed.
    ``session.close_code`` tells why it ended. With Redis, a session of a server
    process that died is announced once by a surviving process, as a ``LostSession``
    (same ``id``, ``client_id``, ``channels``; ``close_code`` 1006; ``lost`` True).
    """


@hookspec
def authorize(session: Session, action: str, channel: str) -> MaybeAwaitable[bool | None]:
    """May ``session`` perform ``action`` (``"subscribe"`` or ``"publish"``) on ``channel``?

    Runs before every subscribe, publish, history and presence request (history and
    presence read the channel, so they count as ``"subscribe"``: no other value of
    ``action`` reaches a plugin). Return ``False`` to refuse (the client gets error ``forbidden``);
    ``True`` or ``None`` do not refuse, and the next implementation is asked. The first
    ``False`` wins: implementations are asked in pluggy's call order and those after a
    refusal are not asked (a refusal cannot be overturned, so asking them would only
    cost time). ``async def`` is allowed.
    """


@hookspec
def client_subscribed(session: Session, channel: str, bot: Bot) -> MaybeAwaitable[None]:
    """``session`` has just subscribed to ``channel`` (its result frame is queued).

    Every implementation runs; return values are ignored and failures are logged.
    ``async def`` is allowed. ``bot`` publishes as this plugin
    (``await bot.publish(channel, "welcome!")``): greeters live here.
    """


@hookspec
def client_unsubscribed(session: Session, channel: str, bot: Bot) -> MaybeAwaitable[None]:
    """``session`` has left ``channel`` (by ``unsubscribe``, not by disconnecting).

    Every implementation runs, each with its own ``bot`` (publishing as the plugin);
    return values are ignored and failures are logged. ``async def`` is allowed.
    """


# -- message -----------------------------------------------------------------------------


@hookspec
def filter_message(message: Message, session: Session | None) -> MaybeAwaitable[Message | None]:
    """Inspect or rewrite a message before it is published.

    Runs on the process that received the ``publish`` frame (``session`` is the sender;
    ``None`` for messages published by bots). Return a changed copy
    (``message.replace(text=...)``) or ``None`` to keep it unchanged. Filters are
    chained: each sees the previous one's output, in pluggy's call order. A filter may
    change ``text`` and ``ts`` only; returning anything else (another type, or a changed
    ``channel``, ``sender``, ``mid`` or ``bot``) is logged and the sender gets
    ``internal``. Raise :class:`quart_chat.Rejected` with a reason to stop the message:
    the sender gets error ``rejected`` with that reason, nobody receives it.
    ``async def`` is allowed.
    """


@hookspec
def message_published(message: Message, bot: Bot) -> MaybeAwaitable[None]:
    """A message was published (delivery is under way on every process).

    Runs once per message, on the process that accepted it, after the broker took it:
    persistence and bots live here. ``bot`` publishes or replies as this plugin
    (``await bot.reply(message, "text")``); when ``message`` itself came from a bot,
    ``bot`` ignores it unless the plugin asked for ``bot.answer_bots = True``, so two
    bots cannot loop. Every implementation runs, each with its own ``bot``; return
    values are ignored; failures are logged (the message was already delivered, so the
    sender is not told). ``async def`` is allowed.

    Messages are announced in publish order: a bot's answer is announced only after
    every plugin saw the message it answers, so persistence stores question before
    answer. The sender's ``publish`` result waits for these hooks, so keep them quick.
    """


# -- persistence -------------------------------------------------------------------------


@hookspec(firstresult=True)
def history(channel: str, limit: int, before: str | None) -> MaybeAwaitable[list[Message] | None]:
    """Serve the ``history`` frame: up to ``limit`` messages of ``channel``.

    Return messages newest first, only those older than the message id ``before`` when
    it is given; or ``None`` when this plugin keeps no history for the channel. First
    non-None result wins (the plugins after it are not asked); if every plugin returns
    ``None`` the client gets ``history_unavailable``. ``async def`` is allowed.
    """


@hookspec(firstresult=True)
def recover(channel: str, since: str, limit: int) -> MaybeAwaitable[list[Message] | None]:
    """Serve recovery: the messages of ``channel`` published after message id ``since``.

    Runs when a client subscribes with ``since`` (typically after a reconnect). Return
    the messages strictly after ``since``, **oldest first**, at most ``limit`` of them
    (the server asks for one more than it will replay, so returning ``limit`` messages
    tells it there were too many). Return ``None`` when ``since`` is not (or no longer)
    known for the channel: the server cannot then prove that nothing was lost. The
    client is told ``recovered: true`` only when a plugin returned a complete list, and
    is otherwise sent nothing and expected to fetch ``history``. The plugin must store
    messages in publish order with increasing offsets (Redis Streams, SQLite rowids).
    First non-None result wins (the plugins after it are not asked); a plugin that
    fails ends the search and the client is told ``recovered: false``. ``async def``
    is allowed.
    """


# -- triggers ----------------------------------------------------------------------------


@hookspec
def register_routes(app: Quart, bot: Bot) -> list[Route] | None:
    """Add HTTP routes to the server: webhooks, small JSON endpoints, status pages.

    Runs once per process while the app is built, before it serves. Return a list of
    ``(rule, view)`` or ``(rule, view, methods)`` tuples, or ``None``: ``rule`` is a Quart
    URL rule (``"/hooks/github"``, ``"/status/<name>"``), ``view`` a Quart view function
    (``async def``; it reads ``quart.request`` and returns what a Quart view returns),
    ``methods`` the HTTP methods it answers (default ``["GET"]``). To publish from a
    view, close over ``bot``: it publishes as this plugin (``await bot.publish(channel,
    text)``), through filters, delivery and persistence. ``app`` is there for what a list
    cannot say (a blueprint, an error handler).

    Every implementation's routes are added, in registration order. Must be a plain
    ``def`` (it runs before the event loop serves). A rule the server or another plugin
    already has, a rule under ``/api/`` or ``/static/``, a wrong shape or an exception
    stops startup with the plugin's name, like a misspelled hook.
    """


@hookspec
def register_timers() -> list[TimerEntry] | None:
    """Declare functions the server runs periodically: digests, uptime notes, cleanups.

    Runs once per process while the app is built. Return a list of ``(seconds,
    function)`` tuples, or ``None``. Each ``function(bot)`` (``async def`` preferred) runs
    every ``seconds``, **once per period across all processes** (periods are aligned to
    the wall clock; with Redis one process is elected per period, see
    :mod:`quart_chat.triggers`), with its own ``bot`` named after the plugin. A run is
    bounded by ``hook_timeout``; a failure or timeout is logged and the next period runs
    as usual; a period whose start finds Redis unreachable is skipped.

    Every implementation's timers run. Must be a plain ``def``; a wrong shape or an
    exception stops startup with the plugin's name.
    """


# -- functions ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def call(session: Session, method: str, params: dict[str, Any], bot: Bot) -> MaybeAwaitable[Any]:
    """Answer a client's ``call`` frame: run the function named ``method``.

    ``params`` is the frame's JSON object (``{}`` when absent); ``session`` is the caller.
    Return any JSON-encodable value to answer (the client gets
    ``{"type": "result", "id": ..., "ok": true, "data": value}``), or ``None`` when this
    plugin has no function called ``method``. First non-None result wins (the plugins
    after it are not asked); when every implementation returns None the client gets
    error ``unknown_method``. Raise :class:`quart_chat.Rejected` (``rejected``) or
    :class:`quart_chat.Forbidden` (``forbidden``) to refuse with your reason; any other
    exception, or running past ``hook_timeout``, answers ``internal`` and is logged.
    ``bot`` publishes as this plugin.

    Each call runs in its own task, so a slow function never holds up the caller's other
    frames nor other clients; ``async def`` is the way to wait on I/O (a sync function
    runs on the event loop and must be quick).
    """
