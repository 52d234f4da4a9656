"""Command bot: answers ``/help``, ``/roll 2d6``, ``/who`` and ``/time`` in the channel.

Built on :class:`quart_chat.Commands`: any message starting with ``/`` is a command,
``/help`` lists them, an unknown one is pointed at ``/help`` and bad arguments are
explained to the sender. The bot answers once per command even with many server
processes, because ``message_published`` runs only on the process that accepted the
message. It never answers other bots (the host mutes ``bot`` for bot messages).

Settings (environment variables, read at startup):

- ``QUART_CHAT_PLUGIN_COMMAND_BOT_NAME`` — the bot's sender name (default ``bot``).
- ``QUART_CHAT_PLUGIN_COMMAND_BOT_MAX_DICE`` — most dice one ``/roll`` may throw (``100``).
"""

from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING

from quart_chat import BadArguments, Commands, Message, hookimpl, plugin_settings

if TYPE_CHECKING:
    from quart_chat import Bot

BOT_NAME = "bot"
MAX_DICE = 100
MAX_SIDES = 1000

_DICE = re.compile(r"(\d*)d(\d+)([+-]\d+)?", re.IGNORECASE)

commands = Commands(prefix="/")


@hookimpl
def startup() -> None:
    global BOT_NAME, MAX_DICE
    config = plugin_settings("command_bot", name="bot", max_dice=100)
    BOT_NAME, MAX_DICE = config.name, config.max_dice


@hookimpl
async def message_published(message: Message, bot: Bot) -> None:
    await commands.handle(message, bot)


@commands.command("roll", help="roll dice: /roll 2d6, /roll d20+3")
def roll(message: Message, args: str) -> str:
    spec = args or "1d6"
    match = _DICE.fullmatch(spec)
    if match is None:
        raise BadArguments(f"cannot read {args!r}: try /roll 2d6 or /roll d20+3")
    count, sides = int(match.group(1) or 1), int(match.group(2))
    bonus = int(match.group(3) or 0)
    if not (1 <= count <= MAX_DICE and 2 <= sides <= MAX_SIDES):
        raise BadArguments(f"/roll takes 1-{MAX_DICE} dice of 2-{MAX_SIDES} sides")
    rolls = [random.randint(1, sides) for _ in range(count)]
    shown = " + ".join(map(str, rolls)) + (f" {match.group(3)[0]} {abs(bonus)}" if bonus else "")
    return f"{message.sender} rolled {spec}: {shown} = {sum(rolls) + bonus}"


@commands.command("who", help="who is in this channel")
async def who(message: Message, bot: Bot) -> str:
    clients = await bot.presence(message.channel)
    return f"in {message.channel}: {', '.join(clients) or 'nobody'}"


@commands.command("time", help="server time, UTC")
def server_time() -> str:
    return "server time: " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
