"""Wire protocol v1: frames <-> typed values, validation, and encoding.

Inbound frames are decoded at the edge into msgspec Structs (a tagged union on
``type``), so handlers never see raw JSON. Every failure becomes a :class:`ChatError`
with the protocol's code, carrying the frame's ``id`` when one could be read.
"""

from __future__ import annotations

import os
import re
import time
from typing import Annotated, Any

import msgspec

from .errors import BadFrame, ChatError, InvalidChannel, TooLarge, UnknownType

PROTOCOL_VERSION = 1

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")

#: Close codes the server uses (documented in docs/protocol.md).
CLOSE_GOING_AWAY = 1001  # server shutting down
CLOSE_POLICY = 1008  # too many bad frames
CLOSE_TOO_BIG = 1009  # frame beyond the transport limit
CLOSE_INTERNAL = 1011
CLOSE_SLOW_CONSUMER = 4000  # outbound queue full: the client stopped reading
CLOSE_DEAD_PEER = 4001  # no frame and no pong within ping_interval + ping_timeout
CLOSE_DISCONNECTED = 4002  # disconnected by a backend (server API ``disconnect``)
CLOSE_TOKEN_EXPIRED = 4003  # the session's token reached its exp without a refresh

RequestId = int | str | None
#: A message id as :func:`new_mid` makes it (22 hex digits); ``before`` and ``since``
#: must be one, so a malformed id is ``bad_frame`` here rather than a store's error.
Mid = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{22}$")]


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="message",
              omit_defaults=True):
    """One chat message, as plugins see it and as it travels on the wire.

    Immutable; make a changed copy with :meth:`replace`.
    """

    channel: str
    sender: str
    text: str
    ts: float
    mid: str
    bot: bool = False

    def replace(self, **changes: Any) -> Message:
        """A copy of this message with ``changes`` applied (e.g. ``text=...``)."""
        return msgspec.structs.replace(self, **changes)


class _Frame(msgspec.Struct, kw_only=True, tag_field="type"):
    id: RequestId = None


class Subscribe(_Frame, tag="subscribe"):
    channel: str
    #: Recovery: the last message id the client saw on ``channel`` (needs a plugin
    #: implementing the ``recover`` hook); the result then carries ``recovered``.
    since: Mid | None = None


class Unsubscribe(_Frame, tag="unsubscribe"):
    channel: str | None = None


class Publish(_Frame, tag="publish"):
    channel: str
    text: str


class Channels(_Frame, tag="channels"):
    pass


class Presence(_Frame, tag="presence"):
    channel: str


class History(_Frame, tag="history"):
    channel: str
    limit: int = 50
    before: Mid | None = None


class Ping(_Frame, tag="ping"):
    pass


class Call(_Frame, tag="call"):
    """Run the plugin functions for ``method`` (the ``call`` hook); ``params`` any object."""

    method: str
    params: dict[str, Any] | None = None



class Refresh(_Frame, tag="refresh"):
    #: A new token for the same ``sub``: its claims (``channels``, ``exp``) apply from now.
    token: str



ClientFrame = (Subscribe | Unsubscribe | Publish | Channels | Presence | History | Ping | Call
               | Refresh)
FRAME_TYPES = frozenset(
    frame.__struct_config__.tag for frame in ClientFrame.__args__
)

_decoder = msgspec.json.Decoder(ClientFrame)
TOO_DEEP = "frame is nested too deeply"
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    """A decode failure: the error to send and the request id it answers (if any)."""

    def __init__(self, error: ChatError, request_id: RequestId) -> None:
        super().__init__(str(error))
        self.error = error
        self.request_id = request_id


def decode(data: str | bytes | None, max_bytes: int) -> ClientFrame:
    """Decode one inbound WebSocket frame, or raise :class:`FrameError`."""
    if not isinstance(data, str):
        raise FrameError(BadFrame("binary frames are not supported: send JSON text"), None)
    # Cheap test first: a str of n characters has at most 4n UTF-8 bytes.
    if len(data) * 4 > max_bytes and len(data.encode()) > max_bytes:
        raise FrameError(TooLarge(f"frame is larger than {max_bytes} bytes"), _peek_id(data))
    try:
        frame: ClientFrame = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _explain(data, exc) from None
    except RecursionError:  # a small frame of a thousand nested arrays: not our protocol
        raise FrameError(BadFrame(TOO_DEEP), None) from None
    return frame


def _peek_id(data: str) -> RequestId:
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(value, dict):
        request_id = value.get("id")
        if isinstance(request_id, (int, str)) and not isinstance(request_id, bool):
            return request_id
    return None


def _explain(data: str, exc: msgspec.DecodeError) -> FrameError:
    """Turn msgspec's message into the protocol's error code (slow path only)."""
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return FrameError(BadFrame(f"malformed JSON: {exc}"), None)
    except RecursionError:
        return FrameError(BadFrame(TOO_DEEP), None)
    if not isinstance(value, dict):
        return FrameError(BadFrame("a frame must be a JSON object"), None)
    request_id = _peek_id(data)
    kind = value.get("type")
    if not isinstance(kind, str):
        return FrameError(BadFrame("a frame needs a string field 'type'"), request_id)
    if kind not in FRAME_TYPES:
        known = ", ".join(sorted(FRAME_TYPES))
        return FrameError(UnknownType(f"unknown frame type {kind!r}; known: {known}"), request_id)
    return FrameError(BadFrame(str(exc).replace("`", "'")), request_id)


def check_channel(channel: str) -> str:
    """Return ``channel`` if it is a valid channel name, else raise InvalidChannel."""
    if CHANNEL_PATTERN.fullmatch(channel) is None:
        raise InvalidChannel(
            f"invalid channel {channel[:140]!r}: use 1-128 of A-Z a-z 0-9 _ . : -"
        )
    return channel


def check_method(method: str) -> str:
    """Return ``method`` if it is a valid function name (the channel-name rules)."""
    if CHANNEL_PATTERN.fullmatch(method) is None:
        raise BadFrame(f"invalid method {method[:140]!r}: use 1-128 of A-Z a-z 0-9 _ . : -")
    return method


def is_valid_client_id(client_id: str) -> bool:
    return CLIENT_ID_PATTERN.fullmatch(client_id) is not None


def new_mid(ts: float | None = None) -> str:
    """A message id that sorts by time: 12 hex digits of milliseconds + 10 random."""
    millis = int((time.time() if ts is None else ts) * 1000)
    return f"{millis:012x}{os.urandom(5).hex()}"


def encode_message(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_message(payload: bytes | str) -> Message:
    return msgspec.json.decode(payload, type=Message)


def membership(kind: str, channel: str, client_id: str, session_id: str) -> bytes:
    """A ``join`` or ``leave`` frame, encoded for the broker like a message."""
    return _encoder.encode({"type": kind, "channel": channel, "client_id": client_id,
                            "session": session_id})


def encode(frame: dict[str, Any]) -> str:
    return _encoder.encode(frame).decode()


def result(request_id: RequestId, fields: dict[str, Any] | None = None) -> str:
    frame: dict[str, Any] = {"type": "result", "id": request_id, "ok": True}
    if fields:
        frame.update(fields)
    return encode(frame)


def unsubscribed(channel: str, reason: str) -> str:
    """The server left ``channel`` for the client (it must not rejoin on its own)."""
    return encode({"type": "unsubscribed", "channel": channel, "reason": reason})


def error(request_id: RequestId, exc: ChatError) -> str:
    return encode({"type": "error", "id": request_id, "code": exc.code, "message": str(exc)})
