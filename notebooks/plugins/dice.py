"""A command bot: ``/roll NdM`` rolls N dice with M sides and answers in the channel."""

from __future__ import annotations

import random
import re

from quart_chat import Message, hookimpl
from quart_chat.bots import Bot

BOT_NAME = "dice"
_ROLL = re.compile(r"/roll\s+(\d{1,2})d(\d{1,3})\s*$")


@hookimpl
async def message_published(message: Message, bot: Bot) -> None:
    """Answer ``/roll 2d6`` with the dice and their sum."""
    match = _ROLL.match(message.text)
    if match is None:
        return
    count, sides = int(match.group(1)), int(match.group(2))
    if not (1 <= count <= 20 and 2 <= sides <= 100):
        await bot.reply(message, "I roll 1-20 dice with 2-100 sides")
        return
    dice = [random.randint(1, sides) for _ in range(count)]
    shown = " + ".join(map(str, dice))
    await bot.reply(message, f"{message.sender} rolled {count}d{sides}: {shown} = {sum(dice)}")
