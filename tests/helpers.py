"""Shared helpers of the reliability suites: polling, raw sockets, tokens, RSS."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import jwt

from .wsclient import OPEN

T = TypeVar("T")

SECRET = "test-secret-that-is-long-enough-for-hs256"


def wait_until(check: Callable[[], T], timeout: float, what: str = "condition",
               interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s (last: {value!r})")
        time.sleep(interval)


def settled(read: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """``read()`` once it is empty, or its last value after ``timeout``: for waiting on
    something to drain and then asserting on what is left, by name."""
    deadline = time.monotonic() + timeout
    while (value := read()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value


def token(sub: str = "alice", secret: str = SECRET, algorithm: str = "HS256",
          **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def unsigned_token(**claims: Any) -> str:
    """A token with ``alg: none`` (no signature): must always be refused."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), in KiB."""
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raw_handshake(port: int, query: str, headers: dict[str, str] | None = None,
                  timeout: float = 5.0) -> tuple[socket.socket, int, bytes]:
    """Open a WebSocket by hand: (socket, HTTP status, whatever followed the headers).

    Used for peers that must misbehave at the transport level (never read, never pong).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET /ws?{query} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return sock, status, rest


def ws_frame(text: str) -> bytes:
    """One masked client text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytearray([0x81])
    if len(payload) < 126:
        header.append(0x80 | len(payload))
    elif len(payload) < 65536:
        header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    masks = (mask * (len(payload) // 4 + 1))[:len(payload)]  # XOR as one big integer: fast
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(masks, "big")).to_bytes(
        len(payload), "big")
    return bytes(header) + mask + masked


def read_close_code(sock: socket.socket, timeout: float = 10.0) -> int | None:
    """Read (and discard) server frames until the close frame; its code, None at EOF."""
    sock.settimeout(timeout)
    buffer = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while len(buffer) >= 2:
            opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + length:
                break
            payload, buffer = buffer[offset:offset + length], buffer[offset + length:]
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        try:
            chunk = sock.recv(1 << 16)
        except OSError:
            return None
        if not chunk:
            return None
        buffer += chunk
    return None


def health(base_url: str) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))


class Collector:
    """A WebSocket client whose background thread records every frame with its time.

    For fault tests: the test keeps publishing and probing while the reader thread
    collects messages, ``gap`` frames and replies, without ever blocking on one socket.
    """

    def __init__(self, ws_url: str, client_id: str, **params: str) -> None:
        import threading
        from urllib.parse import urlencode

        import websocket

        query = urlencode({"client_id": client_id, **params})
        self.ws = websocket.create_connection(f"{ws_url}?{query}", timeout=30,
                                              enable_multithread=True)
        OPEN.add(self)
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.replies: dict[Any, dict[str, Any]] = {}
        self.closed: float | None = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_until(lambda: self.of("welcome"), 10, "welcome")

    def _read(self) -> None:
        try:
            while True:
                data = self.ws.recv()
                if not data:
                    break
                now = time.monotonic()
                for line in data.split("\n"):
                    frame = json.loads(line)
                    with self._lock:
                        self.frames.append((now, frame))
                        if frame["type"] in ("result", "error") and frame.get("id") is not None:
                            self.replies[frame["id"]] = frame
        except Exception:
            pass
        self.closed = time.monotonic()

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [f for _, f in self.frames
                    if f["type"] == kind and all(f.get(k) == v for k, v in match.items())]

    def timed(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, f) for t, f in self.frames if f["type"] == kind]

    def send(self, kind: str, **fields: Any) -> int:
        """Send a frame with a fresh id; the id (see :meth:`reply`)."""
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
        self.ws.send(json.dumps({"type": kind, "id": request_id, **fields}))
        return request_id

    def reply(self, request_id: int, timeout: float = 15.0) -> dict[str, Any]:
        return wait_until(lambda: self.replies.get(request_id), timeout, f"reply {request_id}")

    def request(self, kind: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        return self.reply(self.send(kind, **fields), timeout)

    def ok(self, kind: str, **fields: Any) -> dict[str, Any]:
        reply = self.request(kind, **fields)
        assert reply["type"] == "result", reply
        return reply

    def close(self) -> None:
        import contextlib

        OPEN.discard(self)
        with contextlib.suppress(Exception):
            self.ws.close()
        self._thread.join(5)


def http_json(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
              method: str = "POST") -> tuple[int, Any]:
    """One HTTP request: (status, decoded JSON answer), error statuses included."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())
