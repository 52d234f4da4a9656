"""create_app(): the Quart app, its routes and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from quart import Quart, Response, jsonify, websocket

from . import __version__, liveness
from .config import Settings
from .errors import HandshakeRefused
from .handshake import admit, identify_client
from .service import ChatService
from .session import Session

EXTENSION = "quart_chat"


def create_app(settings: Settings | None = None, *, plugins: Iterable[object] = ()) -> Quart:
    """Build the server app. Settings default to the ``QUART_CHAT_*`` environment.

    ``plugins`` are registered beside those the settings load (objects or modules with
    ``@hookimpl`` functions): handy in tests and notebooks.
    """
    settings = Settings.from_env() if settings is None else settings
    liveness.install()
    logging.getLogger("quart_chat").setLevel(settings.log_level.upper())
    app = Quart(__name__)
    service = ChatService(settings, plugins)
    app.extensions[EXTENSION] = service

    @app.before_serving
    async def start() -> None:
        await service.start(app)

    @app.after_serving
    async def stop() -> None:
        await service.stop(app)

    @app.websocket("/ws")
    async def ws() -> Response | None:
        try:
            identity = await identify_client(service, websocket)
            await admit(service, identity.client_id)
        except HandshakeRefused as exc:
            response = jsonify({"error": exc.reason})
            response.status_code = exc.status
            return response
        batch = websocket.args.get("batch", "0") not in ("0", "", "false")
        # The session outlives this handler's context lookups: give it the real object.
        connection = websocket._get_current_object()  # type: ignore[attr-defined]
        session = Session(service, connection, identity.client_id, batch=batch)
        session.claims, session.allowed_channels = identity.claims, identity.channels
        await session.run()
        return None

    @app.get("/healthz")
    async def healthz() -> tuple[Response, int]:
        health = await service.health()
        health["version"] = __version__
        return jsonify(health), 200 if health["status"] == "ok" else 503

    return app


def chat_service(app: Quart) -> ChatService:
    """The :class:`ChatService` of an app made by :func:`create_app`."""
    service: ChatService = app.extensions[EXTENSION]
    return service
