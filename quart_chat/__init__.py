"""quart-chat: a real-time chat server (Quart + hypercorn WebSockets over Redis pub/sub)."""

from __future__ import annotations

__version__ = "0.1.0"

from .app import bot_for, chat_service, create_app
from .bots import Bot
from .config import Settings
from .errors import ChatError, Forbidden, Rejected
from .hookspecs import hookimpl
from .plugin_settings import plugin_settings
from .protocol import Message
from .session import Session

__all__ = [
    "Bot",
    "ChatError",
    "Forbidden",
    "Message",
    "Rejected",
    "Session",
    "Settings",
    "__version__",
    "bot_for",
    "chat_service",
    "create_app",
    "hookimpl",
    "plugin_settings",
]
