"""Start a real server from Python (a notebook, a script) and stop it cleanly.

::

    from quart_chat.embedded import start_server

    server = start_server(plugins=[my_plugin])    # hypercorn in a background thread
    alice = server.client("alice")                # a ChatClient connected to it
    ...
    server.stop()

The server is :class:`quart_chat.testing.ServerThread` on a free loopback port, with
the embedded broker unless ``redis_url`` is given. When the environment variable
``QUART_CHAT_SERVER_URL`` is set (e.g. ``ws://127.0.0.1:8000/ws``), :func:`start_server`
starts nothing and points at that server instead, so the same notebook runs against a
deployed server; plugins given in Python are then not loaded (the server loads its own).
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .config import Settings
from .testing import ServerThread

if TYPE_CHECKING:
    from .client import ChatClient
    from .widgets import ChatWidget

__all__ = ["SERVER_URL_ENV", "NotebookServer", "start_server"]

#: Set it to a server's URL to use that server instead of starting one.
SERVER_URL_ENV = "QUART_CHAT_SERVER_URL"

log = logging.getLogger("quart_chat.embedded")
_running: list[NotebookServer] = []


class NotebookServer:
    """A server for a notebook: one started here, or the one ``QUART_CHAT_SERVER_URL`` names."""

    def __init__(self, url: str, thread: ServerThread | None = None) -> None:
        #: ``ws://HOST:PORT/ws`` of the server.
        self.url = url
        #: The in-process server, or None when using an external one.
        self.thread = thread
        self._clients: list[ChatClient] = []

    def __repr__(self) -> str:
        where = "embedded" if self.thread else "external"
        return f"<NotebookServer {where} {self.url}>"

    @property
    def embedded(self) -> bool:
        """True when this process runs the server (plugins defined here are loaded)."""
        return self.thread is not None

    @property
    def service(self) -> Any:
        """The running :class:`~quart_chat.service.ChatService` (embedded servers only)."""
        if self.thread is None:
            raise RuntimeError("an external server's internals are not reachable")
        return self.thread.service

    def client(self, client_id: str, **options: Any) -> ChatClient:
        """A :class:`~quart_chat.client.ChatClient` connected as ``client_id``.

        Clients made here are closed by :meth:`stop`.
        """
        from .client import ChatClient

        client = ChatClient(self.url, client_id, **options)
        self._clients.append(client)
        return client

    def widget(self, client_id: str, channel: str | None = "lobby", **options: Any
               ) -> ChatWidget:
        """A :class:`~quart_chat.widgets.ChatWidget` for a new client (joins ``channel``)."""
        from .widgets import ChatWidget

        return ChatWidget(self.client(client_id), channel=channel, **options)

    def stop(self) -> None:
        """Close the clients made here, then stop the server if it was started here."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.thread is not None:
            self.thread.stop()
        if self in _running:
            _running.remove(self)

    def __enter__(self) -> NotebookServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    *,
    plugins: Iterable[object] = (),
    plugins_dir: str | os.PathLike[str] | None = None,
    redis_url: str | None = None,
    settings: Settings | None = None,
    use_env: bool = True,
    log_level: str = "error",
    **options: Any,
) -> NotebookServer:
    """Start a server in a background thread, or use ``$QUART_CHAT_SERVER_URL``.

    Parameters:
        plugins: objects or modules with ``@hookimpl`` functions, registered in-process.
        plugins_dir: a folder whose ``*.py`` files are loaded as plugins.
        redis_url: use Redis (``redis://...``) instead of the embedded broker.
        settings: base settings (defaults: built-in defaults, not the environment).
        use_env: honour ``QUART_CHAT_SERVER_URL``; pass False when the notebook needs
            its in-process plugins (they cannot be loaded into another server).
        log_level: of the ``quart_chat`` loggers (``error`` keeps notebooks quiet).
        options: further :class:`~quart_chat.config.Settings` fields.
    """
    external = os.environ.get(SERVER_URL_ENV, "").strip() if use_env else ""
    if external:
        from .client import ws_url

        if plugins:
            log.warning("%s is set: plugins given here are not loaded into %s",
                        SERVER_URL_ENV, external)
        return NotebookServer(ws_url(external))
    changes: dict[str, Any] = {"log_level": log_level, **options}
    if plugins_dir is not None:
        changes["plugins_dir"] = os.fspath(plugins_dir)
    if redis_url is not None:
        changes["redis_url"] = redis_url
    thread = ServerThread((settings or Settings()).replace(**changes), plugins=plugins)
    thread.start()
    server = NotebookServer(thread.ws_url, thread)
    _running.append(server)
    return server


@atexit.register
def _stop_all() -> None:
    """Stop servers a notebook forgot to stop, so the kernel exits promptly."""
    for server in list(_running):
        try:
            server.stop()
        except Exception:  # the interpreter is exiting: report, do not raise
            log.warning("could not stop %r", server, exc_info=True)
