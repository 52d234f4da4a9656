"""Shared helpers of the reliability suites: polling, raw sockets, tokens, RSS."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jwt

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
    return bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
