"""Command bot: answers ``!roll 2d6`` (or ``/roll``), ``!help``, ``!who``, ``!time``,
and the function ``roll`` that clients ``call``.

A message starting with ``!`` or ``/`` is a command; unknown commands get a list of the
known ones. The bot answers once per command even with many server processes, because
``message_published`` runs only on the process that accepted the message. It never
answers other bots (the host mutes ``bot`` for bot messages).

The same dice, as a function: ``{"type": "call", "method": "roll", "params": {"dice":
"2d6"}, "id": 1}`` answers ``{"dice": "2d6", "rolls": [3, 5], "bonus": 0, "total": 8}``
to the caller alone; ``"announce": true`` in ``params`` also posts the roll, as the bot,
to the channel named by ``"channel"``. Unreadable dice are refused (error ``rejected``).

Settings (environment variables, read at startup):

- ``QUART_CHAT_PLUGIN_COMMAND_BOT_NAME`` — the bot's sender name (default ``bot``).
- ``QUART_CHAT_PLUGIN_COMMAND_BOT_MAX_DICE`` — most dice one roll may throw (``100``).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from quart_chat import Message, Rejected, hookimpl, plugin_settings

if TYPE_CHECKING:
    from quart_chat import Bot, Session

BOT_NAME = "bot"
MAX_DICE = 100
MAX_SIDES = 1000

#: A message starting with one of these is a command.
PREFIXES = ("!", "/")

_DICE = re.compile(r"(\d*)d(\d+)([+-]\d+)?", re.IGNORECASE)


@hookimpl
def startup() -> None:
    global BOT_NAME, MAX_DICE
    config = plugin_settings("command_bot", name="bot", max_dice=100)
    BOT_NAME, MAX_DICE = config.name, config.max_dice


@hookimpl
async def message_published(message: Message, bot: Bot) -> None:
    text = message.text.strip()
    if text[:1] not in PREFIXES or message.bot:
        return
    command, _, args = text[1:].partition(" ")
    handler = COMMANDS.get(command.lower())
    if handler is None:
        known = ", ".join(text[0] + name for name in COMMANDS)
        answer = f"unknown command {text[0]}{command}; try {known}"
    else:
        answer = await handler(message, args.strip(), bot)
    await bot.reply(message, answer)


@hookimpl
async def call(session: Session, method: str, params: dict[str, Any], bot: Bot) -> Any:
    if method != "roll":
        return None  # not ours: another plugin may answer, else unknown_method
    dice = params.get("dice", "1d6")
    result = roll(dice if isinstance(dice, str) else "")
    if isinstance(result, str):
        raise Rejected(f"{result}: try 2d6 or d20+3")
    if params.get("announce"):
        await bot.publish(str(params.get("channel")), result.told(session.client_id))
    return asdict(result)


@dataclass
class Roll:
    dice: str
    rolls: list[int]
    bonus: int
    total: int

    def told(self, who: str) -> str:
        shown = " + ".join(map(str, self.rolls))
        if self.bonus:
            shown += f" {'+' if self.bonus > 0 else '-'} {abs(self.bonus)}"
        return f"{who} rolled {self.dice}: {shown} = {self.total}"


def roll(dice: str) -> Roll | str:
    """Throw ``dice`` (``2d6``, ``d20+3``); a Roll, or why it cannot be read."""
    match = _DICE.fullmatch(dice)
    if match is None:
        return f"cannot read {dice!r}"
    count, sides = int(match.group(1) or 1), int(match.group(2))
    bonus = int(match.group(3) or 0)
    if not (1 <= count <= MAX_DICE and 2 <= sides <= MAX_SIDES):
        return f"a roll takes 1-{MAX_DICE} dice of 2-{MAX_SIDES} sides"
    rolls = [random.randint(1, sides) for _ in range(count)]
    return Roll(dice, rolls, bonus, sum(rolls) + bonus)


async def _help(message: Message, args: str, bot: Bot) -> str:
    p = message.text.strip()[0]  # answer in the prefix the client used
    return (f"commands: {p}help (this), {p}roll 2d6 (dice, e.g. {p}roll d20+3), "
            f"{p}who (who is in this channel), {p}time (server time, UTC)")


async def _roll(message: Message, args: str, bot: Bot) -> str:
    result = roll(args or "1d6")
    if isinstance(result, str):
        prefix = message.text.strip()[0]
        return f"{result}: try {prefix}roll 2d6 or {prefix}roll d20+3"
    return result.told(message.sender)


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
