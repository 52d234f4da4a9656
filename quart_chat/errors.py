"""One root error whose subclasses carry their wire code (protocol v1 ``error`` frames)."""

from __future__ import annotations

from typing import ClassVar


class ChatError(Exception):
    """An error a client sees as ``{"type": "error", "code": ..., "message": ...}``.

    Raised by the server's handlers and by :mod:`quart_chat.client` alike, so scripts,
    plugins and tests catch one type and read :attr:`code`.
    """

    code: ClassVar[str] = "internal"
    _by_code: ClassVar[dict[str, type[ChatError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Only a class that declares its own code owns it: a subclass that merely inherits
        # one (a server-side detail such as HookFailed) must not be what a client decodes.
        if "code" in cls.__dict__:
            ChatError._by_code[cls.code] = cls

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.replace("_", " "))

    @property
    def message(self) -> str:
        return str(self)

    @classmethod
    def from_code(cls, code: str, message: str) -> ChatError:
        """The error class registered for ``code`` (a plain ChatError if unknown)."""
        error = ChatError._by_code.get(code, ChatError)(message)
        if type(error) is ChatError and code != ChatError.code:
            error.code = code  # type: ignore[misc]  # an unknown, newer server code
        return error


class BadFrame(ChatError):
    code = "bad_frame"


class UnknownType(ChatError):
    code = "unknown_type"


class InvalidChannel(ChatError):
    code = "invalid_channel"


class AlreadySubscribed(ChatError):
    code = "already_subscribed"


class NotSubscribed(ChatError):
    code = "not_subscribed"


class TooLarge(ChatError):
    code = "too_large"


class RateLimited(ChatError):
    code = "rate_limited"


class Forbidden(ChatError):
    code = "forbidden"


class Rejected(ChatError):
    """Raise from ``filter_message`` to stop a message; the sender sees the reason."""

    code = "rejected"


class UnknownMethod(ChatError):
    """No plugin answered a ``call`` for this method (every ``call`` hook returned None),
    or the server API has no such method."""

    code = "unknown_method"


class HistoryUnavailable(ChatError):
    code = "history_unavailable"


class Unavailable(ChatError):
    """The broker (Redis) cannot be reached right now; the client may retry."""

    code = "unavailable"


class InternalError(ChatError):
    code = "internal"


class ConfigError(Exception):
    """A setting or command-line option that cannot work; the message names it."""


class HandshakeRefused(Exception):
    """A WebSocket handshake refused before accept, with an HTTP status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
