"""``quart-chat serve --server uvicorn|granian``: the same app and settings on another server.

hypercorn (the default) is driven by :mod:`quart_chat.cli` itself. uvicorn and granian
build the app in each worker from the factory ``quart_chat.app:create_app``, which reads
the ``QUART_CHAT_*`` environment: the settings ``serve`` resolved (options over
environment) are written there first, so every worker sees exactly them.

Each server keeps its own transport: uvicorn sends WebSocket pings every
``ping_interval`` and closes a peer that has not answered within ``ping_timeout``;
granian answers pings but sends none. uvicorn refuses messages over 4 x ``max_frame_bytes``
(``ws_max_size``); granian has no such setting, its own defaults apply.
"""

from __future__ import annotations

import os

from .config import Settings

FACTORY = "quart_chat.app:create_app"


def _host_port(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def run_uvicorn(settings: Settings) -> int:
    """Serve with uvicorn until SIGINT/SIGTERM; the exit status."""
    import uvicorn

    os.environ.update(settings.to_env())
    host, port = _host_port(settings.bind)
    uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=settings.workers,
                ws_ping_interval=settings.ping_interval, ws_ping_timeout=settings.ping_timeout,
                ws_max_size=4 * settings.max_frame_bytes, log_level=settings.log_level,
                access_log=False, timeout_graceful_shutdown=int(settings.shutdown_timeout),
                log_config=None)
    return 0


def run_granian(settings: Settings) -> int:
    """Serve with granian until SIGINT/SIGTERM; the exit status."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    os.environ.update(settings.to_env())
    host, port = _host_port(settings.bind)
    Granian(FACTORY, factory=True, address=host, port=port, interface=Interfaces.ASGI,
            workers=settings.workers, log_level=LogLevels(settings.log_level.lower()),
            log_access=False).serve()
    return 0
