"""Who is connecting: origin check, plugin ``authenticate``, JWT, or plain ``client_id``.

Everything here runs before the socket is accepted, so a refusal is an HTTP response
with a status and a reason rather than an accepted-then-closed socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ChatError, HandshakeRefused
from .protocol import is_valid_client_id
from .tokens import verifier

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from .config import Settings
    from .service import ChatService


@dataclass(frozen=True)
class Identity:
    """Who the handshake proved: the client id and, with a token, its claims."""

    client_id: str
    claims: dict[str, Any] | None = None
    #: The token's ``channels`` claim (exact names or ``prefix*``); None: no limit.
    channels: tuple[str, ...] | None = None


async def identify_client(service: ChatService, request: Websocket) -> Identity:
    """The :class:`Identity` of this handshake, or raise :class:`HandshakeRefused`."""
    check_origin(service.settings.allowed_origins, request.headers.get("Origin"))
    try:
        client_id = await service.hooks.authenticate(request)
    except ChatError as exc:
        raise HandshakeRefused(403 if exc.code == "forbidden" else 500, str(exc)) from None
    if client_id is not None:
        return Identity(_checked(client_id))
    if service.settings.tokens_required:
        return await token_identity(service.settings, _token(request))
    client_id = request.args.get("client_id")
    if client_id is None:
        raise HandshakeRefused(400, "missing client_id query parameter")
    return Identity(_checked(client_id))


async def token_identity(settings: Settings, token: str) -> Identity:
    """What ``token`` proves, by the checks of a handshake (keys, ``aud``, ``iss``,
    ``exp``, ``sub``, ``channels``): at connect and on ``refresh``. HandshakeRefused
    otherwise."""
    claims = await verifier(settings).claims(token)
    return Identity(_checked(claims["sub"]), claims, _channels_claim(claims))


def _checked(client_id: object) -> str:
    if not isinstance(client_id, str) or not is_valid_client_id(client_id):
        raise HandshakeRefused(400, "invalid client_id: use 1-64 of A-Z a-z 0-9 _ . -")
    return client_id


async def admit(service: ChatService, client_id: str) -> None:
    """Refuse (HTTP 429) a client id that already has ``max_connections_per_client``.

    Counted from the store, so sessions on every process count; handshakes racing each
    other on different processes may briefly pass the cap by their number.
    """
    limit = service.settings.max_connections_per_client
    local = sum(1 for s in service.sessions if s.client_id == client_id)
    if local < limit:
        try:
            count = await service.store.session_count(client_id)
        except ChatError:
            count = local  # store down: the local count is all we can enforce
        if max(local, count) < limit:
            return
    raise HandshakeRefused(
        429, f"too many connections for this client id (at most {limit})"
    )


def _channels_claim(claims: dict[str, Any] | None) -> tuple[str, ...] | None:
    if claims is None or "channels" not in claims:
        return None
    value = claims["channels"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise HandshakeRefused(401, "invalid token: 'channels' must be a list of strings")
    return tuple(value)


def check_origin(allowed: tuple[str, ...], origin: str | None) -> None:
    """Browsers send Origin; refuse any not listed exactly. No Origin (scripts) passes."""
    if allowed and origin is not None and origin not in allowed:
        raise HandshakeRefused(403, f"origin {origin!r} is not allowed")


def _token(request: Websocket) -> str:
    token = request.args.get("token")
    header = request.headers.get("Authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip()
    if not token:
        raise HandshakeRefused(401, "a token is required (?token= or Authorization: Bearer)")
    return token
