"""The bot context handed to plugins: publish or reply as a named bot."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from .protocol import Message, check_channel, new_mid

if TYPE_CHECKING:
    from .service import ChatService


def bot_name(plugin: object, plugin_name: str) -> str:
    """The sender name of a plugin's bot: its ``BOT_NAME`` or its plugin name, cleaned."""
    name = getattr(plugin, "BOT_NAME", None) or plugin_name.split(" ")[0].rsplit(".", 1)[-1]
    return clean_name(str(name))


def clean_name(name: str) -> str:
    """``name`` as a valid sender (client id) name: other characters become ``-``."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", name)[:64] or "bot"


class Bot:
    """Publishes as one plugin. Messages go through filters, delivery and persistence."""

    def __init__(self, service: ChatService, name: str, trigger: Message | None = None) -> None:
        self.name = name
        #: Set to True to answer messages that other bots sent (beware of loops).
        self.answer_bots = False
        self._service = service
        self._trigger = trigger

    @property
    def muted(self) -> bool:
        """True when the triggering message came from a bot and bots are not answered."""
        return self._trigger is not None and self._trigger.bot and not self.answer_bots

    async def publish(self, channel: str, text: str) -> Message | None:
        """Publish ``text`` to ``channel`` as this bot; None when muted (see ``muted``)."""
        if self.muted:
            return None
        check_channel(channel)
        ts = time.time()
        message = Message(channel=channel, sender=self.name, text=text, ts=ts,
                          mid=new_mid(ts), bot=True)
        return await self._service.publish_message(message, None)

    async def reply(self, message: Message, text: str) -> Message | None:
        """Answer ``message`` in its channel."""
        return await self.publish(message.channel, text)

    async def presence(self, channel: str) -> list[str]:
        """Client ids with at least one session in ``channel`` (on any process), sorted."""
        return await self._service.store.presence(check_channel(channel))
