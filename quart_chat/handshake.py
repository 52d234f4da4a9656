"""Who is connecting: origin check, plugin ``authenticate``, JWT, or plain ``client_id``.

Everything here runs before the socket is accepted, so a refusal is an HTTP response
with a status and a reason rather than an accepted-then-closed socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jwt

from .errors import ChatError, HandshakeRefused
from .protocol import is_valid_client_id

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from .service import ChatService


async def identify(service: ChatService, request: Websocket) -> str:
    """The client id for this handshake, or raise :class:`HandshakeRefused`."""
    check_origin(service.settings.allowed_origins, request.headers.get("Origin"))
    try:
        client_id = await service.hooks.first("authenticate", request=request)
    except ChatError as exc:
        raise HandshakeRefused(403 if exc.code == "forbidden" else 500, str(exc)) from None
    if client_id is None:
        if service.settings.jwt_secret:
            client_id = _from_token(service, request)
        else:
            client_id = request.args.get("client_id")
            if client_id is None:
                raise HandshakeRefused(400, "missing client_id query parameter")
    if not isinstance(client_id, str) or not is_valid_client_id(client_id):
        raise HandshakeRefused(400, "invalid client_id: use 1-64 of A-Z a-z 0-9 _ . -")
    return client_id


def check_origin(allowed: tuple[str, ...], origin: str | None) -> None:
    """Browsers send Origin; refuse any not listed exactly. No Origin (scripts) passes."""
    if allowed and origin is not None and origin not in allowed:
        raise HandshakeRefused(403, f"origin {origin!r} is not allowed")


def _from_token(service: ChatService, request: Websocket) -> str:
    settings = service.settings
    token = request.args.get("token")
    header = request.headers.get("Authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip()
    if not token:
        raise HandshakeRefused(401, "a token is required (?token= or Authorization: Bearer)")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=["HS256", "HS384", "HS512"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise HandshakeRefused(401, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise HandshakeRefused(401, f"invalid token: {exc}") from None
    return str(claims["sub"])
