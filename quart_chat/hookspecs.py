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
def client_connected(session: Session, bot: Bot) -> Any:
    """A session was accepted (``session.client_id``, ``session.id``).

    Runs after the welcome frame was queued. All implementations run; return values are
    ignored. Use it for greetings, audit and presence side effects; ``bot`` publishes as
    this plugin.
    """


@hookspec
def client_disconnected(session: Session, bot: Bot) -> Any:
    """A session ended, for any reason (client left, slow consumer, shutdown).

    Runs after the session was removed from every channel; ``session.channels`` still
    names the channels it was in, so ``bot`` (publishing as this plugin) can say goodbye
    there. All implementations run; return values are ignored. ``session.close_code``
    tells why it ended. For a session of a server process that died, the node heartbeat
    of a surviving process calls this hook with a ``LostSession`` (``lost`` is True).
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
def client_unsubscribed(session: Session, channel: str, bot: Bot) -> Any:
    """``session`` has left ``channel`` (by ``unsubscribe``, not by disconnecting).

    All implementations run; return values are ignored. ``bot`` publishes as this plugin.
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


# -- functions ---------------------------------------------------------------------------


@hookspec
def call(session: Session, method: str, params: dict[str, Any], bot: Bot) -> Any:
    """Answer a client's ``call`` frame: run the function named ``method``.

    ``params`` is the frame's JSON object (``{}`` when absent); ``session`` is the caller.
    Return any JSON-encodable value to answer (the client gets
    ``{"type": "result", "id": ..., "ok": true, "data": value}``), or ``None`` when this
    plugin has no function called ``method``. First non-None result wins; when every
    implementation returns None the client gets error ``unknown_method``. Raise
    :class:`quart_chat.Rejected` (``rejected``) or :class:`quart_chat.Forbidden`
    (``forbidden``) to refuse with your reason; any other exception, or running past
    ``hook_timeout``, answers ``internal`` and is logged. ``bot`` publishes as this plugin.

    Each call runs in its own task, so a slow function never holds up the caller's other
    frames nor other clients; ``async def`` is the way to wait on I/O (a sync function
    runs on the event loop and must be quick).
    """
