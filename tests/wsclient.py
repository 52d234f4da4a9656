"""A raw protocol client for tests: sends any frame (bad ones too) and reads replies by id."""

from __future__ import annotations

import contextlib
import json
from collections import deque
from typing import Any
from urllib.parse import urlencode

import websocket


class Client:
    """One real WebSocket connection (websocket-client), synchronous and strict."""

    def __init__(self, ws_url: str, client_id: str | None, timeout: float = 5.0,
                 **params: str) -> None:
        query = {"client_id": client_id, **params} if client_id is not None else params
        self.ws = websocket.create_connection(f"{ws_url}?{urlencode(query)}", timeout=timeout)
        self.inbox: deque[dict[str, Any]] = deque()
        self._pending: deque[dict[str, Any]] = deque()
        self._next_id = 0
        self.welcome = self.recv()
        assert self.welcome["type"] == "welcome", self.welcome

    def send(self, frame: dict[str, Any] | str) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def recv(self) -> dict[str, Any]:
        """The next frame from the server (coalesced frames are split)."""
        if not self._pending:
            for line in self.ws.recv().split("\n"):
                self._pending.append(json.loads(line))
        return self._pending.popleft()

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send a frame with a fresh id; return its result or error frame."""
        self._next_id += 1
        request_id = self._next_id
        self.send({"type": kind, "id": request_id, **fields})
        return self.reply(request_id)

    def reply(self, request_id: Any) -> dict[str, Any]:
        while True:
            frame = self.recv()
            if frame["type"] in ("result", "error") and frame["id"] == request_id:
                return frame
            self.inbox.append(frame)

    def ok(self, kind: str, **fields: Any) -> dict[str, Any]:
        reply = self.request(kind, **fields)
        assert reply["type"] == "result" and reply["ok"] is True, reply
        return reply

    def error(self, kind: str, **fields: Any) -> str:
        reply = self.request(kind, **fields)
        assert reply["type"] == "error", reply
        return str(reply["code"])

    def next(self, kind: str = "message") -> dict[str, Any]:
        """The next frame of ``kind``, from the inbox first; others stay in the inbox."""
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
        return [self.next("message") for _ in range(count)]

    def close(self) -> None:
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.close(timeout=1)
        self.ws.shutdown()  # frees the socket even when the server closed first


def close_code(ws: websocket.WebSocket, limit: int = 100_000) -> int | None:
    """Read (and drop) frames until the server's close frame; its code (None: no code)."""
    for _ in range(limit):
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    raise AssertionError(f"no close frame within {limit} frames")
