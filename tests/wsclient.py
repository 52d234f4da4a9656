"""A raw protocol client for tests: sends any frame (bad ones too) and reads replies by id."""

from __future__ import annotations

from typing import Any

import websocket

from quart_chat.pytest_plugin import ChatClient


class Client(ChatClient):
    """The plugin authors' client, as the tests open it: a shorter timeout, query
    parameters as keywords, and a connection that must be welcomed."""

    def __init__(self, ws_url: str, client_id: str | None, timeout: float = 5.0,
                 **params: str) -> None:
        super().__init__(ws_url, client_id, params, timeout=timeout)
        assert self.welcome["type"] == "welcome", self.welcome

    def messages(self, count: int) -> list[dict[str, Any]]:
        return [self.next("message") for _ in range(count)]


def close_code(ws: websocket.WebSocket, limit: int = 100_000) -> int | None:
    """Read (and drop) frames until the server's close frame; its code (None: no code)."""
    for _ in range(limit):
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    raise AssertionError(f"no close frame within {limit} frames")
