"""Command bot: answers ``/help``, ``/roll 2d6``, ``/who`` and ``/time`` in the channel.

Any message starting with ``/`` is a command; unknown commands get a list of the known
ones. The bot answers once per command even with many server processes, because
``message_published`` runs only on the process that accepted the message. It never
answers other bots (the host mutes ``bot`` for bot messages).

Settings (environment variables, read at startup):

- ``QUART_CHAT_PLUGIN_COMMAND_BOT_NAME`` — the bot's sender name (default ``bot``).
- ``QUART_CHAT_PLUGIN_COMMAND_BOT_MAX_DICE`` — most dice one ``/roll`` may throw (``100``).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from quart_chat import Message, hookimpl, plugin_settings

if TYPE_CHECKING:
    from quart_chat import Bot

BOT_NAME = "bot"
MAX_DICE = 100
MAX_SIDES = 1000

_DICE = re.compile(r"(\d*)d(\d+)([+-]\d+)?", re.IGNORECASE)


@hookimpl
def startup() -> None:
    global BOT_NAME, MAX_DICE
    config = plugin_settings("command_bot", name="bot", max_dice=100)
    BOT_NAME, MAX_DICE = config.name, config.max_dice


@hookimpl
async def message_published(message: Message, bot: Bot) -> None:
    text = message.text.strip()
    if not text.startswith("/") or message.bot:
        return
    command, _, args = text[1:].partition(" ")
    handler = COMMANDS.get(command.lower())
    if handler is None:
        answer = f"unknown command /{command}; try {', '.join('/' + c for c in COMMANDS)}"
    else:
        answer = await handler(message, args.strip(), bot)
    await bot.reply(message, answer)


async def _help(message: Message, args: str, bot: Bot) -> str:
    return ("commands: /help (this), /roll 2d6 (dice, e.g. /roll d20+3), "
            "/who (who is in this channel), /time (server time, UTC)")


async def _roll(message: Message, args: str, bot: Bot) -> str:
    match = _DICE.fullmatch(args or "1d6")
    if match is None:
        return f"cannot read {args!r}: try /roll 2d6 or /roll d20+3"
    count, sides = int(match.group(1) or 1), int(match.group(2))
    bonus = int(match.group(3) or 0)
    if not (1 <= count <= MAX_DICE and 2 <= sides <= MAX_SIDES):
        return f"/roll takes 1-{MAX_DICE} dice of 2-{MAX_SIDES} sides"
    rolls = [random.randint(1, sides) for _ in range(count)]
    shown = " + ".join(map(str, rolls)) + (f" {match.group(3)[0]} {abs(bonus)}" if bonus else "")
    return f"{message.sender} rolled {args or '1d6'}: {shown} = {sum(rolls) + bonus}"


async def _who(message: Message, args: str, bot: Bot) -> str:
    clients = await bot.presence(message.channel)
    return f"in {message.channel}: {', '.join(clients) or 'nobody'}"


async def _time(message: Message, args: str, bot: Bot) -> str:
    return "server time: " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


COMMANDS: dict[str, Callable[[Message, str, Bot], Awaitable[str]]] = {
    "help": _help,
    "roll": _roll,
    "who": _who,
    "time": _time,
}
