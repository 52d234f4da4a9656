"""Start real servers from Python (a notebook, a script): one per name, stopped at exit.

::

    from quart_chat.embedded import start_server

    server = start_server(plugins=[my_plugin])    # hypercorn in a background thread
    alice = server.client("alice")                # a ChatClient connected to it
    ...
    server.stop()                                 # or leave it: it stops with the kernel

A notebook re-runs cells, so :func:`start_server` keeps **one server per name** in this
process: the same arguments again return the running server; different ones (an edited
plugin) replace it on the same address, so widgets already open reconnect to the new one.
``process=True`` runs ``quart-chat serve`` as a child process instead of a thread (several
real processes on one Redis: :func:`start_redis` starts a private ``redis-server``).

When the environment variable ``QUART_CHAT_SERVER_URL`` is set (e.g.
``ws://127.0.0.1:8000/ws``), :func:`start_server` starts nothing and points at that server
instead, so the same notebook runs against a deployed server; plugins given in Python are
then not loaded (the server loads its own).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shutil
import signal
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .config import Settings
from .testing import RedisServer, ServerProcess, ServerThread

if TYPE_CHECKING:
    from .client import ChatClient
    from .widgets import ChatWidget

__all__ = ["SERVER_URL_ENV", "NotebookServer", "RedisMissing", "start_redis", "start_server"]

#: Set it to a server's URL to use that server instead of starting one.
SERVER_URL_ENV = "QUART_CHAT_SERVER_URL"

log = logging.getLogger("quart_chat.embedded")
# What this process started, by name: re-running a cell finds it here.
_servers: dict[str, NotebookServer] = {}
_redis: dict[str, RedisServer] = {}


class RedisMissing(RuntimeError):
    """``redis-server`` is not installed; shown in a notebook as one line, not a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"⚠ {self}"]


class NotebookServer:
    """A server for a notebook: one started here, or the one ``QUART_CHAT_SERVER_URL`` names."""

    def __init__(self, url: str, runner: ServerThread | ServerProcess | None = None,
                 name: str = "default") -> None:
        #: ``ws://HOST:PORT/ws`` of the server.
        self.url = url
        #: The server's name in this process (``start_server(name=...)``).
        self.name = name
        self._runner = runner
        self._key: tuple[Any, ...] = ()
        self._plugins: list[object] = []  # given to an in-process server, to restart it
        self._clients: list[ChatClient] = []
        self._widgets: dict[str, ChatWidget] = {}

    def __repr__(self) -> str:
        where = ("external" if self._runner is None else
                 f"process {self._runner.pid}" if isinstance(self._runner, ServerProcess)
                 else "embedded")
        state = "" if self.running else " stopped"
        return f"<NotebookServer {self.name!r} {where} {self.url}{state}>"

    @property
    def embedded(self) -> bool:
        """True when this process runs the server (plugins defined here are loaded)."""
        return isinstance(self._runner, ServerThread)

    @property
    def thread(self) -> ServerThread | None:
        """The in-process server, or None (an external server or a child process)."""
        return self._runner if isinstance(self._runner, ServerThread) else None

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT``: the browser chat page (``/``), ``/metrics``, ``/healthz``."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        scheme = "https" if parts.scheme == "wss" else "http"
        return f"{scheme}://{parts.netloc}"

    @property
    def running(self) -> bool:
        """False once stopped or killed (an external server counts as running)."""
        if isinstance(self._runner, ServerProcess):
            return self._runner.process is not None and self._runner.process.poll() is None
        return self._runner is None or _servers.get(self.name) is self

    @property
    def service(self) -> Any:
        """The running :class:`~quart_chat.service.ChatService` (embedded servers only)."""
        if self.thread is None:
            raise RuntimeError("only a server running in this process has a reachable service")
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
        """The :class:`~quart_chat.widgets.ChatWidget` of ``client_id`` (joins ``channel``).

        One per client id: running the cell again shows the same window rather than a
        second connection. ``token`` and ``reconnect_*`` options go to the client, the
        rest to the widget.
        """
        from .widgets import ChatWidget

        made = self._widgets.get(client_id)
        if made is not None and made.client.state != "closed":
            return made
        client_options = {k: options.pop(k) for k in list(options)
                          if k == "token" or k.startswith("reconnect")}
        made = ChatWidget(self.client(client_id, **client_options), channel=channel, **options)
        self._widgets[client_id] = made
        return made

    def kill(self) -> None:
        """SIGKILL a server started with ``process=True``: a crash, no goodbyes."""
        if not isinstance(self._runner, ServerProcess):
            raise RuntimeError("only a server started with process=True can be killed")
        self._runner.stop(signal.SIGKILL)

    def restart(self) -> NotebookServer:
        """Start a stopped or killed server again on the same address (clients reconnect)."""
        if self._runner is not None:
            self._halt()
            self._runner = _respawn(self._runner, self._plugins)
            _servers[self.name] = self
        return self

    def stop(self) -> None:
        """Close the clients made here, then stop the server if it was started here."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._widgets.clear()
        self._halt()
        if _servers.get(self.name) is self:
            del _servers[self.name]

    def _halt(self) -> None:
        """Stop the server itself; clients stay (they reconnect to a replacement)."""
        if self._runner is not None:
            self._runner.stop()

    def __enter__(self) -> NotebookServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    name: str = "default",
    *,
    plugins: Iterable[object] = (),
    plugins_dir: str | os.PathLike[str] | None = None,
    redis_url: str | None = None,
    settings: Settings | None = None,
    process: bool = False,
    use_env: bool = True,
    log_level: str = "error",
    **options: Any,
) -> NotebookServer:
    """Start the server ``name`` (or return it: one per name), or use ``$QUART_CHAT_SERVER_URL``.

    Parameters:
        name: the server's name in this process. Called again with the same arguments,
            the running server is returned; with different ones it is replaced on the
            same address (clients made through it reconnect).
        plugins: objects or modules with ``@hookimpl`` functions, registered in-process;
            with ``process=True``, module names the child imports (``-p``).
        plugins_dir: a folder whose ``*.py`` files are loaded as plugins.
        redis_url: use Redis (``redis://...``) instead of the embedded broker.
        settings: base settings (defaults: built-in defaults, not the environment).
        process: run ``quart-chat serve`` as a child process rather than a thread (it sees
            this process's environment and ``sys.path``).
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
        return NotebookServer(ws_url(external), name=name)
    plugins = list(plugins)
    changes: dict[str, Any] = {"log_level": log_level, **options}
    if plugins_dir is not None:
        changes["plugins_dir"] = os.fspath(plugins_dir)
    if redis_url is not None:
        changes["redis_url"] = redis_url
    if process:
        if not all(isinstance(p, str) for p in plugins):
            raise TypeError("a server process loads plugins by module name: pass strings")
        changes["plugins"] = tuple(plugins)
    configured = (settings or Settings()).replace(**changes)
    key = (process, configured, *(id(p) if not isinstance(p, str) else p for p in plugins))
    server = _servers.get(name)
    if server is not None and server._key == key and server.running:
        return server
    port = None
    if server is not None:
        server._halt()  # replaced: same address, so its clients reconnect to the new one
        port = server._runner.port if server._runner is not None else None
    runner = (_process(configured, port) if process else
              ServerThread(configured, plugins=plugins, port=port).start())
    if server is None:
        server = NotebookServer(runner.ws_url, runner, name)
    server._runner, server.url, server._key, server._plugins = runner, runner.ws_url, key, plugins
    _servers[name] = server
    return server


def start_redis(name: str = "default") -> RedisServer:
    """A private ``redis-server`` on a free loopback port (one per name; stopped at exit).

    Raises :class:`RedisMissing` when ``redis-server`` is not installed.
    """
    redis = _redis.get(name)
    if redis is not None and redis.process is not None and redis.process.poll() is None:
        return redis
    if shutil.which("redis-server") is None:
        raise RedisMissing("this needs redis-server, which is not installed here "
                           "(apt-get install redis-server, brew install redis); "
                           "the other notebooks run without it")
    redis = _redis[name] = RedisServer().start()
    return redis


def _process(settings: Settings, port: int | None) -> ServerProcess:
    """``quart-chat serve`` configured through ``QUART_CHAT_*`` like a deployment."""
    defaults = Settings()
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name == "bind" or value == getattr(defaults, field.name):
            continue
        env[f"QUART_CHAT_{field.name.upper()}"] = (
            ",".join(value) if isinstance(value, tuple) else
            str(value).lower() if isinstance(value, bool) else str(value))
    return ServerProcess(env, port=port).start()


def _respawn(runner: ServerThread | ServerProcess, plugins: Sequence[object]
             ) -> ServerThread | ServerProcess:
    """The same server again, on the same port."""
    if isinstance(runner, ServerProcess):
        return ServerProcess(runner.env, *runner.args, port=runner.port).start()
    return ServerThread(runner.settings, plugins=plugins, port=runner.port).start()


@atexit.register
def _stop_all() -> None:
    """Stop what a notebook left running (servers, then Redis), so the kernel exits cleanly."""
    for server in list(_servers.values()):
        try:
            server.stop()
        except Exception:  # the interpreter is exiting: report, do not raise
            log.warning("could not stop %r", server, exc_info=True)
    for redis in _redis.values():
        redis.stop()
        shutil.rmtree(redis.dir, ignore_errors=True)
    _redis.clear()
