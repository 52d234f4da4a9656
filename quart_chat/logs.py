"""Logging: one line per connect and disconnect, human-readable or JSON lines.

``quart-chat serve`` calls :func:`configure` with the settings ``log_level`` and
``log_format`` (``text``, the default, or ``json``: one JSON object per line, for log
shippers). Applications that embed :func:`quart_chat.create_app` in their own hypercorn
can call it too.

The connection lines (logger ``quart_chat.access``) carry the client id, the session
id, and on disconnect the duration and close code. They never carry tokens, query
strings or message bodies: only the fields named here are logged.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Settings
    from .session import Session

access = logging.getLogger("quart_chat.access")

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: Record attributes copied into JSON lines when a log call passes them in ``extra``.
FIELDS = ("event", "client_id", "session", "duration", "close_code", "close_reason")


def connected(session: Session) -> None:
    """Log an accepted session."""
    access.info(
        "connect client_id=%s session=%s", session.client_id, session.id,
        extra={"event": "connect", "client_id": session.client_id, "session": session.id},
    )


def disconnected(session: Session) -> None:
    """Log an ended session: how long it lasted and why it closed."""
    duration = round(time.time() - session.connected_at, 3)
    access.info(
        "disconnect client_id=%s session=%s duration=%.3fs close_code=%s reason=%r",
        session.client_id, session.id, duration, session.close_code, session.close_reason,
        extra={"event": "disconnect", "client_id": session.client_id, "session": session.id,
               "duration": duration, "close_code": session.close_code,
               "close_reason": session.close_reason},
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and the known fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if field in record.__dict__:
                line[field] = record.__dict__[field]
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for a ``log_format`` setting; ConfigError if unknown."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ConfigError(f"QUART_CHAT_LOG_FORMAT must be one of {', '.join(FORMATS)}")


def configure(settings: Settings) -> None:
    """Send logs to stderr in ``settings.log_format`` at ``settings.log_level``.

    Idempotent: calling it again replaces the handler it installed before.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_quart_chat", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(settings.log_format))
    handler._quart_chat = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
