"""The app under every ASGI server the docs name, each started as the docs say, as a child
process on a free loopback port, stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping

import psutil

from quart_chat.testing import LOOPBACK, free_port, wait_for_health

#: The commands of docs/deploying.md ("Which ASGI server"), ``{port}`` filled in.
COMMANDS: dict[str, tuple[str, ...]] = {
    "hypercorn": ("-m", "quart_chat", "serve", "--bind", f"{LOOPBACK}:{{port}}"),
    "uvicorn": ("-m", "uvicorn", "--factory", "quart_chat.app:create_app", "--host", LOOPBACK,
                "--port", "{port}"),
    "granian": ("-m", "granian", "--interface", "asgi", "--factory", "--host", LOOPBACK,
                "--port", "{port}", "quart_chat.app:create_app"),
}
SERVERS = tuple(COMMANDS)


class Served:
    """One server process running the app, configured by ``QUART_CHAT_*`` variables."""

    def __init__(self, server: str, env: Mapping[str, str] | None = None) -> None:
        self.server = server
        self.port = free_port()
        self.env = {**os.environ, "QUART_CHAT_LOG_LEVEL": "info", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        with tempfile.NamedTemporaryFile(prefix=f"quart-chat-{server}-", suffix=".log",
                                         delete=False) as log:
            self.log_path = log.name

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws"

    def start(self, timeout: float = 30.0) -> Served:
        argv = [sys.executable, *(a.format(port=self.port) for a in COMMANDS[self.server])]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        try:
            wait_for_health(self.url, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.server} did not start; log:\n{self.log()}") from None
        return self

    def rss_kib(self) -> int:
        """Resident memory of the server and its worker processes, in KiB."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) // 1024

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
