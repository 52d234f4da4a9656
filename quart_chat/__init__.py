"""quart-chat: a real-time chat server (Quart + hypercorn WebSockets over Redis pub/sub).

The names below are the public API: what a plugin, a script or a notebook imports.
They load on first use (PEP 562), so ``import quart_chat`` or ``import
quart_chat.client`` does not start importing the server (Quart, hypercorn, pluggy,
JWT, prometheus_client); ``from quart_chat import create_app`` does.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

# Bound eagerly (it is light): the submodule of the same name would otherwise shadow
# the function once anything imported quart_chat.plugin_settings first.
from .plugin_settings import plugin_settings
from .version import __version__

if TYPE_CHECKING:  # what mypy and IDEs see; at run time __getattr__ imports on demand
    from quart import Quart

    from .app import bot_for, chat_service
    from .backends import redis_client
    from .backends.keys import channel_key
    from .bots import Bot
    from .client import ChatClient
    from .commands import BadArguments, Commands
    from .config import Settings
    from .embedded import RedisMissing, start_redis, start_server
    from .errors import ChatError, Forbidden, Rejected, Unavailable
    from .hookspecs import hookimpl
    from .protocol import Message
    from .server_api import ServerAPI
    from .session import Session
    from .widgets import ChatWidget

#: Public name -> the submodule that defines it (one line per name: easy to extend).
_EXPORTS = {
    "BadArguments": "commands",
    "Bot": "bots",
    "ChatClient": "client",
    "ChatError": "errors",
    "ChatWidget": "widgets",  # needs ipywidgets (the notebook extra)
    "Commands": "commands",
    "Forbidden": "errors",
    "Message": "protocol",
    "RedisMissing": "embedded",
    "Rejected": "errors",
    "ServerAPI": "server_api",
    "Session": "session",
    "Settings": "config",
    "Unavailable": "errors",
    "bot_for": "app",
    "channel_key": "backends.keys",
    "chat_service": "app",
    "hookimpl": "hookspecs",
    "redis_client": "backends",
    "start_redis": "embedded",
    "start_server": "embedded",
}

# Written out (not built from _EXPORTS) so that mypy and ruff see the re-exports;
# tests/test_front_door.py checks that the two agree.
__all__ = [
    "BadArguments",
    "Bot",
    "ChatClient",
    "ChatError",
    "ChatWidget",
    "Commands",
    "Forbidden",
    "Message",
    "RedisMissing",
    "Rejected",
    "ServerAPI",
    "Session",
    "Settings",
    "Unavailable",
    "__version__",
    "bot_for",
    "channel_key",
    "chat_service",
    "create_app",
    "hookimpl",
    "plugin_settings",
    "redis_client",
    "start_redis",
    "start_server",
]


def create_app(settings: Settings | None = None, *, plugins: Iterable[object] = ()) -> Quart:
    """Build the server app (see :func:`quart_chat.app.create_app`); imports the server.

    A function here rather than a lazy name: ``hypercorn "quart_chat:create_app()"``
    evaluates the call in this module's namespace, which never asks ``__getattr__``.
    """
    from .app import create_app as build

    return build(settings, plugins=plugins)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
