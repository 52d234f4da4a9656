"""Uptime: a heartbeat in a status channel, on a timer (``register_timers``).

Every ``SECONDS`` one process, however many run, posts how long it has been up and
how many clients watch the channel, e.g. ``up 2h 05m; 3 watching``. A missing heartbeat
tells whoever watches that the deployment (or its timers) stopped.

Settings (environment variables, read when the server starts):

- ``QUART_CHAT_PLUGIN_UPTIME_SECONDS`` — the period (default ``3600``: hourly).
- ``QUART_CHAT_PLUGIN_UPTIME_CHANNEL`` — where to post (default ``status``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from quart_chat import hookimpl, plugin_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart_chat import Bot

BOT_NAME = "uptime"
STARTED = time.time()


def describe(seconds: float) -> str:
    """``3725`` -> ``1h 02m``; under an hour, minutes and seconds."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


@hookimpl
def register_timers() -> list[tuple[float, Callable[[Bot], Awaitable[None]]]]:
    config = plugin_settings("uptime", seconds=3600.0, channel="status")

    async def heartbeat(bot: Bot) -> None:
        watching = len(await bot.presence(config.channel))
        await bot.publish(config.channel,
                          f"up {describe(time.time() - STARTED)}; {watching} watching")

    return [(config.seconds, heartbeat)]
