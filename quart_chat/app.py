"""create_app(): the Quart app, its routes and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterable
from importlib import resources

from quart import Quart, Response, jsonify, request, websocket

from . import api, logs, metrics, transport, triggers
from .bots import Bot
from .config import Settings
from .errors import HandshakeRefused
from .handshake import admit, identify_client
from .service import ChatService
from .session import Session
from .version import __version__

EXTENSION = "quart_chat"


def create_app(settings: Settings | None = None, *, plugins: Iterable[object] = ()) -> Quart:
    """Build the server app. Settings default to the ``QUART_CHAT_*`` environment.

    ``plugins`` are registered beside those the settings load (objects or modules with
    ``@hookimpl`` functions): handy in tests and notebooks.
    """
    settings = Settings.from_env() if settings is None else settings
    logging.getLogger("quart_chat").setLevel(settings.log_level.upper())
    if not logging.getLogger().handlers:
        # Run by a server that configures only its own loggers (uvicorn, granian, plain
        # hypercorn): without this, the connect/disconnect lines would go nowhere.
        logs.configure(settings)
    app = Quart(__name__)
    transport.install(app, settings)
    service = ChatService(settings, plugins)
    # Quart logs a before_serving failure with its traceback; a plugin's startup failure
    # was logged where it happened, in the plugin's words, and must not be buried.
    app.logger.addFilter(lambda record: service.startup_failure is None)
    app.extensions[EXTENSION] = service

    sampler: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start() -> None:
        if settings.tune_gc:
            tune_gc()
        await service.start(app)
        sampler.append(asyncio.create_task(metrics.sample_forever(service), name="metrics"))

    @app.after_serving
    async def stop() -> None:
        for task in sampler:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await service.stop(app)

    api.install(app, service)
    page = _chat_page(settings)

    @app.get("/")
    async def index() -> Response:
        """The chat page (static files under /static, no build step, no network)."""
        host = request.host
        # Defence in depth: even if text ever reached the DOM as markup, nothing runs.
        policy = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  f"connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; "
                  "form-action 'none'; frame-ancestors 'none'")
        return Response(page, content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": policy,
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer"})

    @app.get("/static/index.html")
    async def page_elsewhere() -> Response:
        """The page only at ``/``: the static handler would serve it without the headers
        above, framable, sniffable and cached for hours."""
        return Response("", status=308, headers={"Location": "/"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format; all workers' values in multiprocess mode."""
        body, content_type = metrics.exposition(service)
        return Response(body, content_type=content_type)

    @app.websocket("/ws")
    async def ws() -> Response | None:
        try:
            identity = await identify_client(service, websocket)
            batch = websocket.args.get("batch", "0") not in ("0", "", "false")
            # The session outlives this handler's context lookups: give it the real object.
            session = Session(service, transport.real_websocket(websocket),
                              identity.client_id, batch=batch)
            session.claims, session.allowed_channels = identity.claims, identity.channels
            await admit(service, session)
        except HandshakeRefused as exc:
            response = jsonify({"error": exc.reason})
            response.status_code = exc.status
            return response
        await session.run()
        return None

    @app.get("/healthz")
    async def healthz() -> tuple[Response, int]:
        health = await service.health()
        health["version"] = __version__
        return jsonify(health), 200 if health["status"] == "ok" else 503

    triggers.install(app, service)  # last: plugin routes may not take the server's
    return app


#: Garbage-collection thresholds of a serving process (the interpreter's are 700, 10, 10).
#: Every session holds a few hundred long-lived objects, and each full collection walks
#: them all: with the defaults a reconnect storm of 2,000 clients spent about half its
#: CPU there (bench/README.md, "Issue 14: garbage collection").
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect garbage less often: a young collection every 50,000 allocations instead of
    700, and a full one after 100 collections of the middle generation instead of 10.
    Cycles are still collected, only later."""
    gc.set_threshold(*GC_THRESHOLDS)


def _chat_page(settings: Settings) -> str:
    """index.html, told whether this server wants a token or a plain name."""
    html = resources.files(__package__).joinpath("static/index.html").read_text("utf-8")
    auth = "token" if settings.tokens_required else "name"
    return html.replace('data-auth="name"', f'data-auth="{auth}"', 1)


def chat_service(app: Quart) -> ChatService:
    """The :class:`ChatService` of an app made by :func:`create_app`."""
    service: ChatService = app.extensions[EXTENSION]
    return service


def bot_for(app: Quart, name: str) -> Bot:
    """A bot publishing as ``name`` on ``app``'s server, for code outside hooks: an HTTP
    route, a background task, a notebook. ``await bot_for(app, "deploys").publish(
    "ops", "v2 is out")``; the message runs through filters and ``message_published``."""
    return chat_service(app).bot(name)
