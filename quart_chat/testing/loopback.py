"""Free ports and bounded waits on the loopback address, for every server the tests start."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback address that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on ``port`` (mirakuru-style)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (separate picks may repeat one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def wait_for_health(base_url: str, timeout: float = 15.0) -> dict[str, Any]:
    """Block until ``GET /healthz`` answers 200; return its JSON."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as exc:  # 503 while the broker is down
            exc.close()
            last = exc
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{base_url}/healthz not healthy after {timeout}s: {last}")


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``check()`` until it is true; a bounded loop that names what it waited for."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} after {timeout}s (last error: {last})")


class LoopbackAddress:
    """The URLs of a server listening on ``LOOPBACK:port``."""

    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws"
