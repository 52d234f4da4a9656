"""startup and shutdown: a plugin's own resources open before serving and close after."""

from __future__ import annotations

import pytest

from quart_chat import chat_service, hookimpl

from .kit import Recorder


class Lifecycle:
    def __init__(self) -> None:
        self.seen = Recorder()

    @hookimpl
    async def startup(self, app):
        service = chat_service(app)
        self.seen.add("startup", (app, len(service.sessions)))

    @hookimpl
    def shutdown(self, app):
        self.seen.add("shutdown", (app, len(chat_service(app).sessions)))


def test_hook_startup_runs_once_with_the_app_before_clients_connect(serve):
    """startup gets the app, runs once, and has run by the time a client is welcomed."""
    plugin = Lifecycle()
    server = serve(plugin)
    server.connect("alice")
    assert plugin.seen.of("startup") == [(server.thread.app, 0)]


def test_hook_startup_that_raises_stops_the_server_from_serving(chat_server, settings, caplog):
    """A plugin whose startup fails keeps the server from starting, and says which one."""

    class Broken:
        @hookimpl
        def startup(self):
            raise RuntimeError("database is on fire")

    with pytest.raises(RuntimeError, match="failed to start"):
        chat_server(Broken(), settings=settings)
    assert "plugin Broken: hook startup raised" in caplog.text


def test_hook_shutdown_runs_once_after_every_session_closed(serve):
    """shutdown runs after the sessions were closed, once, with the same app."""
    plugin = Lifecycle()
    server = serve(plugin)
    server.connect("alice").subscribe("lobby")
    server.stop()
    assert plugin.seen.of("shutdown") == [(server.thread.app, 0)]


def test_hook_shutdown_failure_does_not_skip_other_plugins(serve, caplog):
    """A failing shutdown is logged with its plugin's name; the others still run."""

    class Broken:
        @hookimpl
        def shutdown(self):
            raise RuntimeError("cannot close")

    plugin = Lifecycle()
    server = serve(plugin, Broken())
    server.stop()
    assert len(plugin.seen.of("shutdown")) == 1
    assert "plugin Broken: hook shutdown raised" in caplog.text
