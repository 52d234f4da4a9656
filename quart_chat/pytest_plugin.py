"""pytest fixtures for plugin authors, installed with quart-chat (entry point ``pytest11``).

``chat_server`` starts a real server (hypercorn on loopback, in a thread) with the plugins
you give it, and hands out connected WebSocket clients; everything is stopped after the
test::

    import my_plugin

    def test_my_plugin_masks_spam(chat_server):
        server = chat_server(my_plugin)
        alice = server.connect("alice")
        alice.ok("subscribe", channel="lobby")
        alice.ok("publish", channel="lobby", text="buy spam")
        assert alice.next_message()["text"] == "buy s**m"

Needs the ``test`` extra (``pip install 'quart-chat[test]'``) for ``websocket-client``.
Pass ``redis_url=`` (and any other :class:`~quart_chat.Settings` field) to run against
a real Redis; ``hook_timeout=0.5`` and friends work the same way.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import pytest

from .config import Settings
from .testing import ServerThread


class ChatClient:
    """A connected test client (websocket-client): send frames, read replies by id."""

    def __init__(self, ws_url: str, client_id: str | None,
                 params: Mapping[str, str] | None = None, *, timeout: float = 10.0) -> None:
        import websocket

        query = dict(params or {})
        if client_id is not None:
            query["client_id"] = client_id
        self.ws = websocket.create_connection(f"{ws_url}?{urlencode(query)}", timeout=timeout)
        self.inbox: deque[dict[str, Any]] = deque()
        self._pending: deque[dict[str, Any]] = deque()
        self._next_id = 0
        #: The server's ``welcome`` frame.
        self.welcome = self.recv()

    def send(self, frame: dict[str, Any] | str) -> None:
        """Send one frame (a dict is JSON-encoded)."""
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def recv(self) -> dict[str, Any]:
        """The next frame from the server."""
        if not self._pending:
            data = self.ws.recv()
            text = data.decode() if isinstance(data, bytes) else str(data)
            for line in text.split("\n"):
                self._pending.append(json.loads(line))
        return self._pending.popleft()

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send a ``kind`` frame with a fresh id; its ``result`` or ``error`` frame.

        Frames that arrive meanwhile (messages, ...) are kept in :attr:`inbox`.
        """
        self._next_id += 1
        request_id = self._next_id
        self.send({"type": kind, "id": request_id, **fields})
        return self.reply(request_id)

    def reply(self, request_id: Any) -> dict[str, Any]:
        """The ``result`` or ``error`` frame for ``request_id`` (a frame you sent yourself).

        Frames that arrive meanwhile are kept in :attr:`inbox`.
        """
        while True:
            frame = self.recv()
            if frame["type"] in ("result", "error") and frame.get("id") == request_id:
                return frame
            self.inbox.append(frame)

    def ok(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Like :meth:`request`, asserting that the reply is a successful result."""
        reply = self.request(kind, **fields)
        assert reply["type"] == "result" and reply["ok"] is True, reply
        return reply

    def error(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Like :meth:`request`, asserting that the reply is an error frame."""
        reply = self.request(kind, **fields)
        assert reply["type"] == "error", reply
        return reply

    def next(self, kind: str = "message") -> dict[str, Any]:
        """The next frame of ``kind``, from the inbox first."""
        for frame in list(self.inbox):
            if frame["type"] == kind:
                self.inbox.remove(frame)
                return frame
        while True:
            frame = self.recv()
            if frame["type"] == kind:
                return frame
            self.inbox.append(frame)

    def next_message(self) -> dict[str, Any]:
        """The next chat message delivered to this client."""
        return self.next("message")

    def close(self) -> None:
        """Close the connection; never raises, also when the server closed it first."""
        import websocket

        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.close(timeout=1)
        self.ws.shutdown()  # type: ignore[no-untyped-call]  # frees the socket in any case


class ChatServer:
    """A running server (see :class:`quart_chat.testing.ServerThread`) and its clients."""

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

    def connect(self, client_id: str | None = None, **params: str) -> ChatClient:
        """Open a WebSocket as ``client_id`` (extra query parameters as keywords)."""
        client = ChatClient(self.ws_url, client_id, params)
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
    """``chat_server(*plugins, settings=None, **fields) -> ChatServer``: a live server.

    ``plugins`` are modules or objects with ``@hookimpl`` functions; ``fields`` override
    :class:`~quart_chat.Settings` (``redis_url=...``, ``hook_timeout=1.0``). Servers and
    clients are stopped after the test.
    """
    servers: list[ChatServer] = []

    def start(*plugins: object, settings: Settings | None = None, **fields: Any) -> ChatServer:
        base = (settings or Settings()).replace(**fields)
        server = ChatServer(ServerThread(base, plugins=plugins).start())
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()
