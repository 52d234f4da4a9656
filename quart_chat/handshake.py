"""Who is connecting: origin check, plugin ``authenticate``, JWT, or plain ``client_id``.

Everything here runs before the socket is accepted, so a refusal is an HTTP response
with a status and a reason rather than an accepted-then-closed socket.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ChatError, HandshakeRefused
from .protocol import is_valid_client_id
from .tokens import verifier

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from .config import Settings
    from .service import ChatService
    from .session import Session


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


async def admit(service: ChatService, session: Session) -> None:
    """Reserve ``session``'s slot among its client id's ``max_connections_per_client``,
    or refuse (HTTP 429).

    The store counts and records in one step, so sessions on every process count and
    simultaneous handshakes cannot pass the cap. The slot is the session's record: its
    end gives it back, or :meth:`ChatService.release` if it never runs. With the store
    down, only this process's sessions can be counted.
    """
    limit = service.settings.max_connections_per_client
    local = service.local_sessions(session.client_id)
    if local < limit:
        reserving = asyncio.ensure_future(
            service.store.reserve(session.id, session.client_id, limit))
        try:
            # Shielded: a client that leaves now must not leave a slot reserved behind it.
            if await asyncio.shield(reserving):
                return
        except asyncio.CancelledError:
            reserving.add_done_callback(lambda _: service.release(session))
            raise
        except ChatError:
            return  # store down: the local count is all we can enforce
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
    """Browsers send Origin; refuse any not listed. No Origin (scripts) passes.

    Both sides are compared as browsers serialise an origin (see :func:`normal_origin`),
    so ``https://Chat.Example.com`` listed matches what a browser sends; no prefix,
    suffix or substring ever matches.
    """
    if allowed and origin is not None and normal_origin(origin) not in _normal(allowed):
        raise HandshakeRefused(403, f"origin {origin!r} is not allowed")


@functools.lru_cache(maxsize=8)
def _normal(allowed: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normal_origin(origin) for origin in allowed)


def normal_origin(origin: str) -> str:
    """``origin`` as a browser sends it: scheme and host in lower case, no default port,
    no trailing slash. Anything that is not ``scheme://host[:port]`` (``null``) as is."""
    try:
        parts = urlsplit(origin.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return origin
    if (not parts.scheme or not host or "@" in parts.netloc or parts.path not in ("", "/")
            or parts.query or parts.fragment):
        return origin
    scheme = parts.scheme.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6, bracketed again
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _token(request: Websocket) -> str:
    token = request.args.get("token")
    header = request.headers.get("Authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip()
    if not token:
        raise HandshakeRefused(401, "a token is required (?token= or Authorization: Bearer)")
    return token
