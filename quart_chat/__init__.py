"""quart-chat: a real-time chat server (Quart + hypercorn WebSockets over Redis pub/sub)."""

from __future__ import annotations

__version__ = "0.1.0"

from .app import chat_service, create_app
from .backends import redis_client
from .backends.keys import channel_key
from .config import Settings
from .errors import ChatError, Forbidden, Rejected
from .hookspecs import hookimpl
from .plugin_settings import plugin_settings
from .protocol import Message

__all__ = [
    "ChatError",
    "Forbidden",
    "Message",
    "Rejected",
    "Settings",
    "__version__",
    "channel_key",
    "chat_service",
    "create_app",
    "hookimpl",
    "plugin_settings",
    "redis_client",
]
