"""Greeter: welcomes a client in a channel when it subscribes (``client_subscribed``).

Settings (environment variables, read at startup):

- ``QUART_CHAT_PLUGIN_GREETER_TEXT`` — the greeting; ``{client}`` and ``{channel}`` are
  filled in (default ``welcome to {channel}, {client}!``).
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

DEFAULT_TEXT = "welcome to {channel}, {client}!"

_text = DEFAULT_TEXT
_channels: tuple[str, ...] = ("*",)


@hookimpl
def startup() -> None:
    global BOT_NAME, _text, _channels
    config = plugin_settings("greeter", text=DEFAULT_TEXT, channels=("*",), name="greeter")
    BOT_NAME, _text, _channels = config.name, config.text, config.channels


@hookimpl
async def client_subscribed(session: Session, channel: str, bot: Bot) -> None:
    if any(fnmatchcase(channel, pattern) for pattern in _channels):
        client = session.client_id
        await bot.publish(channel, _text.format(client=client, channel=channel))
