"""Greeter: says who's here when a client joins a channel, and who left when it leaves.

A client that subscribes is welcomed with the list of everyone in the channel
(``client_subscribed``); when it unsubscribes, disconnects, or its server process dies
(``client_unsubscribed``, ``client_disconnected``), the channel hears ``bob left
#lobby`` — unless bob is still there from another tab. These are the moments the
server's ``join`` / ``leave`` frames mark (``QUART_CHAT_JOIN_LEAVE``); the greeter puts
them in the channel's text, where history keeps them.

Settings (environment variables, read at startup):

- ``QUART_CHAT_PLUGIN_GREETER_TEXT`` — the greeting; ``{client}``, ``{channel}`` and
  ``{here}`` (who is in the channel) are filled in (default
  ``welcome to {channel}, {client}! here: {here}``).
- ``QUART_CHAT_PLUGIN_GREETER_GOODBYE`` — said when a client leaves; ``{client}`` and
  ``{channel}`` are filled in (default ``{client} left #{channel}``); empty: say nothing.
- ``QUART_CHAT_PLUGIN_GREETER_CHANNELS`` — comma-separated glob patterns of channels to
  greet in (default ``*``: every channel).
- ``QUART_CHAT_PLUGIN_GREETER_NAME`` — the bot's sender name (default ``greeter``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from quart_chat import hookimpl, plugin_settings

if TYPE_CHECKING:
    from quart_chat import Bot, Session

BOT_NAME = "greeter"

DEFAULT_TEXT = "welcome to {channel}, {client}! here: {here}"
DEFAULT_GOODBYE = "{client} left #{channel}"

_text = DEFAULT_TEXT
_goodbye = DEFAULT_GOODBYE
_channels: tuple[str, ...] = ("*",)


@hookimpl
def startup() -> None:
    global BOT_NAME, _text, _goodbye, _channels
    config = plugin_settings("greeter", text=DEFAULT_TEXT, goodbye=DEFAULT_GOODBYE,
                             channels=("*",), name="greeter")
    BOT_NAME, _text, _goodbye, _channels = config.name, config.text, config.goodbye, config.channels


def _greets(channel: str) -> bool:
    return any(fnmatchcase(channel, pattern) for pattern in _channels)


@hookimpl
async def client_subscribed(session: Session, channel: str, bot: Bot) -> None:
    if _greets(channel):
        here = ", ".join(await bot.presence(channel))
        await bot.publish(channel, _text.format(client=session.client_id, channel=channel,
                                                here=here))


@hookimpl
async def client_unsubscribed(session: Session, channel: str, bot: Bot) -> None:
    await _say_goodbye(session.client_id, channel, bot)


@hookimpl
async def client_disconnected(session: Session, bot: Bot) -> None:
    for channel in sorted(session.channels):  # still the channels it was in
        await _say_goodbye(session.client_id, channel, bot)


async def _say_goodbye(client: str, channel: str, bot: Bot) -> None:
    if not _goodbye or not _greets(channel):
        return
    if client in await bot.presence(channel):
        return  # another session of the same client is still in the channel
    await bot.publish(channel, _goodbye.format(client=client, channel=channel))
