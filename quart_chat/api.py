"""The server HTTP API for backends: ``POST /api/<method>`` with a JSON body.

Requests carry ``X-API-Key: <QUART_CHAT_API_KEY>`` (compared in constant time, never
logged); without a configured key the API is off. Each method has a msgspec Struct for
its arguments (unknown fields are refused, so a typo is a clear 400, not a silent
default) and a handler. Answers are ``{"ok": true, ...}`` or ``{"ok": false, "code",
"message"}`` with the wire protocol's error codes. Methods that act on every process go
through :mod:`quart_chat.control`. The reference, with curl examples, is docs/api.md.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from quart import Quart, Response, request

from .bots import Bot
from .errors import (
    BadFrame,
    ChatError,
    Forbidden,
    InternalError,
    TooLarge,
    UnknownMethod,
)
from .protocol import check_channel, is_valid_client_id

if TYPE_CHECKING:
    from .service import ChatService

log = logging.getLogger("quart_chat.api")

#: HTTP status of each error code; any other code is a 400 (bad input).
STATUS = {
    "forbidden": 403,
    "unknown_method": 404,
    "history_unavailable": 404,
    "too_large": 413,
    "internal": 500,
    "unavailable": 503,
}


class _Args(msgspec.Struct, forbid_unknown_fields=True):
    pass


class PublishArgs(_Args):
    channel: str
    text: str
    sender: str = "api"


class BroadcastArgs(_Args):
    channels: list[str]
    text: str
    sender: str = "api"


class ChannelArgs(_Args):
    channel: str


class NoArgs(_Args):
    pass


class HistoryArgs(_Args):
    channel: str
    limit: int = 50
    before: str | None = None


class ClientArgs(_Args):
    client_id: str


class MembershipArgs(_Args):
    client_id: str
    channel: str


class _Unauthorized(Forbidden):
    """A missing or wrong key: ``forbidden``, with HTTP 401."""


def install(app: Quart, service: ChatService) -> None:
    """Add the ``/api/<method>`` route to ``app``."""
    api = Methods(service)

    @app.route("/api/<method>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def server_api(method: str) -> Response:
        try:
            fields = await api.answer(method)
        except ChatError as exc:
            status = 401 if isinstance(exc, _Unauthorized) else STATUS.get(exc.code, 400)
            return _json({"ok": False, "code": exc.code, "message": exc.message}, status)
        return _json({"ok": True, **fields}, 200)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(msgspec.json.encode(body), status=status, content_type="application/json")


Handler = Callable[[Any], Awaitable[dict[str, Any]]]


class Methods:
    """The methods, their arguments and the rules they share."""

    def __init__(self, service: ChatService) -> None:
        self._service = service
        self._settings = service.settings
        self._methods: dict[str, tuple[type[_Args], Handler]] = {
            "publish": (PublishArgs, self.publish),
            "broadcast": (BroadcastArgs, self.broadcast),
            "presence": (ChannelArgs, self.presence),
            "channels": (NoArgs, self.channels),
            "history": (HistoryArgs, self.history),
            "disconnect": (ClientArgs, self.disconnect),
            "subscribe": (MembershipArgs, self.subscribe),
            "unsubscribe": (MembershipArgs, self.unsubscribe),
            "info": (NoArgs, self.info),
        }

    async def answer(self, method: str) -> dict[str, Any]:
        """Authorize the current request, decode its body and run ``method``."""
        key = self._settings.api_key
        if not key:
            raise Forbidden("the server API is off: set QUART_CHAT_API_KEY to turn it on")
        given = request.headers.get("X-API-Key", "")
        if not given:
            raise _Unauthorized("missing X-API-Key header")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise _Unauthorized("wrong API key")
        if method not in self._methods:
            known = ", ".join(sorted(self._methods))
            raise UnknownMethod(f"unknown API method {method[:64]!r}; known: {known}")
        if request.method != "POST":
            raise BadFrame(f"use POST /api/{method} with a JSON body")
        kind, handler = self._methods[method]
        return await handler(await self._arguments(kind))

    async def _arguments(self, kind: type[_Args]) -> Any:
        limit = self._settings.max_frame_bytes
        if (request.content_length or 0) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        body = await request.get_data(as_text=False)
        if len(body) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        try:
            return msgspec.json.decode(body or b"{}", type=kind)
        except msgspec.ValidationError as exc:
            raise BadFrame(str(exc).replace("`", "'")) from None
        except msgspec.DecodeError as exc:
            raise BadFrame(f"the body must be a JSON object: {exc}") from None

    # -- checks ----------------------------------------------------------------------

    def _text(self, text: str) -> str:
        limit = self._settings.max_text_length
        if len(text) > limit:
            raise TooLarge(f"text is longer than {limit} characters")
        return text

    @staticmethod
    def _client_id(value: str, field: str = "client_id") -> str:
        if not is_valid_client_id(value):
            raise BadFrame(f"invalid {field} {value[:80]!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        return value

    async def _publish(self, sender: str, channel: str, text: str) -> str:
        message = await Bot(self._service, sender).publish(channel, text)
        if message is None:  # only a bot answering another bot is muted
            raise InternalError("the message was not published")
        return message.mid

    # -- methods -----------------------------------------------------------------------

    async def publish(self, args: PublishArgs) -> dict[str, Any]:
        channel, text = check_channel(args.channel), self._text(args.text)
        return {"mid": await self._publish(self._client_id(args.sender, "sender"), channel, text)}

    async def broadcast(self, args: BroadcastArgs) -> dict[str, Any]:
        channels = [check_channel(channel) for channel in args.channels]
        most = self._settings.max_channels_per_session
        if not 1 <= len(channels) <= most:
            raise BadFrame(f"channels: give 1 to {most} channel names")
        if len(set(channels)) != len(channels):
            raise BadFrame("channels: a channel is named twice")
        sender, text = self._client_id(args.sender, "sender"), self._text(args.text)
        return {"mids": [await self._publish(sender, channel, text) for channel in channels]}

    async def presence(self, args: ChannelArgs) -> dict[str, Any]:
        return {"clients": await self._service.channel_presence(args.channel)}

    async def history(self, args: HistoryArgs) -> dict[str, Any]:
        messages = await self._service.history(None, args.channel, args.limit, args.before)
        return {"messages": messages}

    async def channels(self, args: NoArgs) -> dict[str, Any]:
        answers = await self._service.control.ask("channels")
        names = {name for result in answers.results for name in result["channels"]}
        return self._with_missing({"channels": sorted(names)}, answers.missing)

    async def info(self, args: NoArgs) -> dict[str, Any]:
        answers = await self._service.control.ask("info")
        nodes = sorted(answers.results, key=lambda node: str(node["node"]))
        return self._with_missing({"nodes": nodes}, answers.missing)

    async def disconnect(self, args: ClientArgs) -> dict[str, Any]:
        return await self._count("disconnect", client_id=self._client_id(args.client_id))

    async def subscribe(self, args: MembershipArgs) -> dict[str, Any]:
        return await self._count("subscribe", client_id=self._client_id(args.client_id),
                                 channel=check_channel(args.channel))

    async def unsubscribe(self, args: MembershipArgs) -> dict[str, Any]:
        return await self._count("unsubscribe", client_id=self._client_id(args.client_id),
                                 channel=check_channel(args.channel))

    async def _count(self, op: str, **args: str) -> dict[str, Any]:
        """Run ``op`` on every process; the number of sessions it acted on, in total."""
        answers = await self._service.control.ask(op, **args)
        total = sum(int(result["sessions"]) for result in answers.results)
        return self._with_missing({"sessions": total}, answers.missing)

    @staticmethod
    def _with_missing(fields: dict[str, Any], missing: int) -> dict[str, Any]:
        """Name the processes that did not answer in time, so a partial answer says so."""
        return {**fields, "missing_nodes": missing} if missing else fields
