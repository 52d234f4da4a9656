"""A raw protocol client for tests: sends any frame (bad ones too) and reads replies by id.

Plugin authors and scripts use the documented :class:`quart_chat.client.ChatClient`
(which the ``chat_server`` fixture hands out); the protocol tests need this one, which
hides nothing: frames are dicts, written and read as they travel.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from typing import Any
from urllib.parse import urlencode

import websocket

#: Every client a test opened and has not closed: the ``close_forgotten_clients`` fixture
#: closes them after each test, so a test that fails halfway leaves no socket behind to
#: be collected (and reported as a ResourceWarning error) in some later test.
OPEN: set[Any] = set()


class Client:
    """A connected WebSocket (websocket-client) that must be welcomed; query parameters
    as keywords."""

    def __init__(self, ws_url: str, client_id: str | None, timeout: float = 5.0,
                 **params: str) -> None:
        query = dict(params)
        if client_id is not None:
            query["client_id"] = client_id
        self.ws = websocket.create_connection(f"{ws_url}?{urlencode(query)}", timeout=timeout)
        OPEN.add(self)
        self.inbox: deque[dict[str, Any]] = deque()
        self._pending: deque[dict[str, Any]] = deque()
        self._next_id = 0
        #: The server's ``welcome`` frame.
        self.welcome = self.recv()
        assert self.welcome["type"] == "welcome", self.welcome

    def send(self, frame: dict[str, Any] | str) -> None:
        """Send one frame (a dict is JSON-encoded)."""
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def recv(self) -> dict[str, Any]:
        """The next frame from the server (a batched text frame is split into its lines)."""
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
        """The ``result`` or ``error`` frame for ``request_id`` (a frame sent with
        :meth:`send`); frames that arrive meanwhile are kept in :attr:`inbox`."""
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

    def messages(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` chat messages."""
        return [self.next("message") for _ in range(count)]

    def close(self) -> None:
        """Close the connection; never raises, also when the server closed it first."""
        OPEN.discard(self)
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.close(timeout=1)
        self.ws.shutdown()  # type: ignore[no-untyped-call]  # frees the socket in any case


def close_code(ws: websocket.WebSocket, limit: int = 100_000) -> int | None:
    """Read (and drop) frames until the server's close frame; its code (None: no code)."""
    for _ in range(limit):
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    raise AssertionError(f"no close frame within {limit} frames")
