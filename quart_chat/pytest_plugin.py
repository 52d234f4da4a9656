"""pytest fixtures for plugin authors, installed with quart-chat (entry point ``pytest11``).

``chat_server`` starts a real server (hypercorn on loopback, in a thread) with the plugins
you give it, and hands out connected :class:`~quart_chat.client.ChatClient` objects (the
documented client); everything is stopped after the test::

    import my_plugin

    def test_my_plugin_masks_spam(chat_server):
        server = chat_server(my_plugin)
        alice = server.connect("alice")
        alice.subscribe("lobby")
        alice.publish("lobby", "buy spam")
        assert alice.receive(timeout=5).text == "buy s**m"

Only the plugins a test passes are loaded, so its result does not depend on what else is
installed; ``entry_points=True`` loads the installed ``quart_chat`` entry points too.
Pass ``redis_url=`` (and any other :class:`~quart_chat.Settings` field) to run against
a real Redis; ``hook_timeout=0.5`` and friends work the same way.

pytest imports this module in every run where quart-chat is installed, so it imports
nothing heavy: the server loads when a test first asks for one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .client import ChatClient, ws_url
from .config import Settings

if TYPE_CHECKING:
    from .testing import ServerThread


class ChatServer:
    """A running server (a :class:`quart_chat.testing.ServerThread`) and its clients."""

    def __init__(self, thread: ServerThread) -> None:
        self.thread = thread
        self.clients: list[ChatClient] = []

    @property
    def url(self) -> str:
        return self.thread.url

    @property
    def ws_url(self) -> str:
        return self.thread.ws_url

    @property
    def service(self) -> Any:
        """The server's ChatService (hub, store, plugin manager)."""
        return self.thread.service

    def connect(self, client_id: str | None = None, *, timeout: float = 5.0,
                reconnect: bool = False, **params: str) -> ChatClient:
        """A :class:`~quart_chat.client.ChatClient` connected as ``client_id``.

        ``params`` are extra query parameters (``token=...``, or whatever an
        ``authenticate`` hook reads). The client does not reconnect unless asked, so a
        test sees the server close it. Raises
        :class:`~quart_chat.client.ConnectFailed` (with ``status``) when refused.
        """
        client = ChatClient(ws_url(self.url, **params), client_id, timeout=timeout,
                            reconnect=reconnect)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        """Close the clients and stop the server (also done after the test)."""
        for client in self.clients:
            client.close()
        self.clients.clear()
        self.thread.stop()


@pytest.fixture
def chat_server() -> Iterator[Callable[..., ChatServer]]:
    """``chat_server(*plugins, settings=None, entry_points=False, **fields) -> ChatServer``.

    ``plugins`` are modules or objects with ``@hookimpl`` functions; ``fields`` override
    :class:`~quart_chat.Settings` (``redis_url=...``, ``hook_timeout=1.0``);
    ``entry_points=True`` also loads the installed entry-point plugins. Servers and
    clients are stopped after the test.
    """
    servers: list[ChatServer] = []

    def start(*plugins: object, settings: Settings | None = None, entry_points: bool = False,
              **fields: Any) -> ChatServer:
        from .testing import ServerThread

        base = (settings or Settings()).replace(**fields)
        thread = ServerThread(base, plugins=plugins, entry_points=entry_points)
        server = ChatServer(thread.start())
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()
