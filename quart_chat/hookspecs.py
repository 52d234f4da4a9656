"""Every hook quart-chat calls, and the two pluggy markers. Nothing else lives here.

The hook names and signatures are a public contract. Any implementation may be a plain
function or an ``async def``: the host awaits what needs awaiting (see
:mod:`quart_chat.plugins`). A hook that raises or runs past ``hook_timeout`` is logged
with its plugin's name; it never takes down a session or the server.

An implementation may accept fewer arguments than the spec lists (pluggy passes only
the ones it names), so ``def authorize(action, channel)`` is fine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from quart import Quart
    from quart.wrappers import Websocket

    from .bots import Bot
    from .protocol import Message
    from .session import Session
    from .triggers import Route, TimerEntry

PROJECT = "quart_chat"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- lifecycle ---------------------------------------------------------------------------


@hookspec
def startup(app: Quart) -> Any:
    """Open the plugin's own resources (connections, files, background tasks).

    Runs once per server process, before the first connection is accepted, in
    registration order. The return value is ignored. A plugin that raises here stops
    startup: a server whose plugins cannot start should not serve.
    """


@hookspec
def shutdown(app: Quart) -> Any:
    """Close what :func:`startup` opened.

    Runs once per server process after every session was closed. Errors and timeouts
    are logged; every plugin's shutdown runs regardless. The return value is ignored.
    It also runs when another plugin's ``startup`` failed, so it may find its own
    resources never opened: check before closing.
    """


# -- connection --------------------------------------------------------------------------


@hookspec
def authenticate(request: Websocket) -> str | None:
    """Decide the client id of a WebSocket handshake, before it is accepted.

    ``request`` is Quart's websocket request (headers, ``args``, ``cookies``...).
    Return a client id (1-64 of ``A-Z a-z 0-9 _ . -``) to accept the handshake as that
    client, or ``None`` to defer to the next plugin and finally to the built-in token /
    ``client_id`` handling. Raise :class:`quart_chat.Forbidden` to refuse the handshake
    (HTTP 403 with your message). First non-None result wins.
    """


@hookspec
def client_connected(session: Session) -> Any:
    """A session was accepted (``session.client_id``, ``session.id``).

    Runs after the welcome frame was queued. All implementations run; return values are
    ignored. Use it for greetings, audit and presence side effects.
    """


@hookspec
def client_disconnected(session: Session) -> Any:
    """A session ended, for any reason (client left, slow consumer, shutdown).

    Runs after the session was removed from every channel. All implementations run;
    return values are ignored. ``session.close_code`` tells why it ended.
    """


@hookspec
def authorize(session: Session, action: str, channel: str) -> bool | None:
    """May ``session`` perform ``action`` (``"subscribe"`` or ``"publish"``) on ``channel``?

    Runs before every subscribe and publish. Return ``False`` to refuse (the client
    gets error ``forbidden``); ``True`` or ``None`` do not refuse. Every implementation
    runs; any ``False`` wins.
    """


@hookspec
def client_subscribed(session: Session, channel: str, bot: Bot) -> Any:
    """``session`` has just subscribed to ``channel`` (its result frame is queued).

    All implementations run; return values are ignored. ``bot`` publishes as this
    plugin (``await bot.publish(channel, "welcome!")``): greeters live here.
    """


@hookspec
def client_unsubscribed(session: Session, channel: str) -> Any:
    """``session`` has left ``channel`` (by ``unsubscribe``, not by disconnecting).

    All implementations run; return values are ignored.
    """


# -- message -----------------------------------------------------------------------------


@hookspec
def filter_message(message: Message, session: Session | None) -> Message | None:
    """Inspect or rewrite a message before it is published.

    Runs on the process that received the ``publish`` frame (``session`` is the sender;
    ``None`` for messages published by bots). Return a changed copy
    (``message.replace(text=...)``) or ``None`` to keep it unchanged. Filters are
    chained: each sees the previous one's output, in pluggy's call order. Raise
    :class:`quart_chat.Rejected` with a reason to stop the message: the sender gets
    error ``rejected`` with that reason, nobody receives it.
    """


@hookspec
def message_published(message: Message, bot: Bot) -> Any:
    """A message was published (delivery is under way on every process).

    Runs once per message, on the process that accepted it, after the broker took it:
    persistence and bots live here. ``bot`` publishes or replies as this plugin
    (``await bot.reply(message, "text")``); when ``message`` itself came from a bot,
    ``bot`` ignores it unless the plugin asked for ``bot.answer_bots = True``, so two
    bots cannot loop. All implementations run; return values are ignored; failures are
    logged (the message was already delivered, so the sender is not told).

    Messages are announced in publish order: a bot's answer is announced only after
    every plugin saw the message it answers, so persistence stores question before
    answer. The sender's ``publish`` result waits for these hooks, so keep them quick.
    """


# -- persistence -------------------------------------------------------------------------


@hookspec
def history(channel: str, limit: int, before: str | None) -> list[Message] | None:
    """Serve the ``history`` frame: up to ``limit`` messages of ``channel``.

    Return messages newest first, only those older than the message id ``before`` when
    it is given; or ``None`` when this plugin keeps no history for the channel. First
    non-None result wins; if every plugin returns ``None`` the client gets
    ``history_unavailable``.
    """


@hookspec
def recover(channel: str, since: str, limit: int) -> list[Message] | None:
    """Serve recovery: the messages of ``channel`` published after message id ``since``.

    Runs when a client subscribes with ``since`` (typically after a reconnect). Return
    the messages strictly after ``since``, **oldest first**, at most ``limit`` of them
    (the server asks for one more than it will replay, so returning ``limit`` messages
    tells it there were too many). Return ``None`` when ``since`` is not (or no longer)
    known for the channel: the server cannot then prove that nothing was lost. The
    client is told ``recovered: true`` only when a plugin returned a complete list, and
    is otherwise sent nothing and expected to fetch ``history``. The plugin must store
    messages in publish order with increasing offsets (Redis Streams, SQLite rowids).
    First non-None result wins; ``async def`` is allowed.
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
