"""Command bot: answers ``!roll 2d6``, ``!who``, ``!time`` and ``!help`` in the channel,
and the function ``roll`` that clients ``call``.

Built on :class:`quart_chat.Commands`: a message starting with ``!`` (or ``/``) is a command,
``!help`` lists them, an unknown one is pointed at ``!help`` and bad arguments are
explained to the sender. The bot answers once per command even with many server
processes, because ``message_published`` runs only on the process that accepted the
message. It never answers other bots (the host mutes ``bot`` for bot messages).

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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from quart_chat import BadArguments, Commands, Message, Rejected, hookimpl, plugin_settings

if TYPE_CHECKING:
    from quart_chat import Bot, Session

BOT_NAME = "bot"
MAX_DICE = 100
MAX_SIDES = 1000

_DICE = re.compile(r"(\d*)d(\d+)([+-]\d+)?", re.IGNORECASE)

commands = Commands(prefix=("!", "/"))  # /roll works too, as it always did


@hookimpl
def startup() -> None:
    global BOT_NAME, MAX_DICE
    config = plugin_settings("command_bot", name="bot", max_dice=100)
    BOT_NAME, MAX_DICE = config.name, config.max_dice


@hookimpl
async def message_published(message: Message, bot: Bot) -> None:
    await commands.handle(message, bot)


@hookimpl
async def call(session: Session, method: str, params: dict[str, Any], bot: Bot) -> Any:
    if method != "roll":
        return None  # not ours: another plugin may answer, else unknown_method
    dice = params.get("dice", "1d6")
    try:
        result = throw(dice if isinstance(dice, str) else "")
    except BadArguments as exc:
        raise Rejected(f"{exc}: try 2d6 or d20+3") from None
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


def throw(dice: str) -> Roll:
    """Throw ``dice`` (``2d6``, ``d20+3``); raises :class:`BadArguments` if unreadable."""
    match = _DICE.fullmatch(dice)
    if match is None:
        raise BadArguments(f"cannot read {dice!r}")
    count, sides = int(match.group(1) or 1), int(match.group(2))
    bonus = int(match.group(3) or 0)
    if not (1 <= count <= MAX_DICE and 2 <= sides <= MAX_SIDES):
        raise BadArguments(f"a roll takes 1-{MAX_DICE} dice of 2-{MAX_SIDES} sides")
    rolls = [random.randint(1, sides) for _ in range(count)]
    return Roll(dice, rolls, bonus, sum(rolls) + bonus)


@commands.command("roll", help="roll dice: !roll 2d6, !roll d20+3")
def roll(message: Message, args: str) -> str:
    return throw(args or "1d6").told(message.sender)


@commands.command("who", help="who is in this channel")
async def who(message: Message, bot: Bot) -> str:
    clients = await bot.presence(message.channel)
    return f"in {message.channel}: {', '.join(clients) or 'nobody'}"


@commands.command("time", help="server time, UTC")
def server_time() -> str:
    return "server time: " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
