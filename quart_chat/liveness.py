"""Dead-peer detection: when did this socket last send us anything, pongs included?

hypercorn sends WebSocket pings (``websocket_ping_interval``) but answers the pongs
inside wsproto and never tells the application, so a peer that vanished without a FIN
(a dead laptop, a black-holed NAT) or a frozen client would keep its session for the
TCP timeout — minutes to hours. :func:`install` wraps hypercorn's ``WSStream.handle``
to stamp the time of every inbound data chunk (frames, pongs, close) into the ASGI
scope, where :class:`~quart_chat.session.Session` reads it.

If hypercorn's internals ever change shape, :func:`install` returns False and sessions
fall back to counting only application frames (clients must then send ``ping`` frames
themselves to stay alive while idle; the README says so).
"""

from __future__ import annotations

import time
from typing import Any

SCOPE_KEY = "quart_chat.activity"

_installed: bool | None = None


class Activity:
    """Monotonic time of the last bytes received from one socket."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = time.monotonic()


def install() -> bool:
    """Patch hypercorn once (idempotent); True when transport activity is tracked."""
    global _installed
    if _installed is not None:
        return _installed
    try:
        from hypercorn.protocol.events import Request
        from hypercorn.protocol.ws_stream import WSStream
    except ImportError:  # pragma: no cover - a hypercorn without these modules
        _installed = False
        return False
    original = WSStream.handle

    async def handle(self: Any, event: Any) -> None:
        activity = self.__dict__.get("_quart_chat_activity")
        if activity is None:
            activity = self._quart_chat_activity = Activity()
        else:
            activity.last = time.monotonic()
        await original(self, event)
        if isinstance(event, Request):
            # The scope is built inside handle(); sessions look the stamp up lazily.
            scope = getattr(self, "scope", None)
            if isinstance(scope, dict):
                scope.setdefault("extensions", {})[SCOPE_KEY] = activity

    WSStream.handle = handle  # type: ignore[method-assign]
    _installed = True
    return True


def activity_of(scope: dict[str, Any]) -> Activity | None:
    """The :class:`Activity` hypercorn stamps for this socket, if :func:`install` ran."""
    found = (scope.get("extensions") or {}).get(SCOPE_KEY)
    return found if isinstance(found, Activity) else None
