"""The app under every ASGI server the docs name, each started as the docs say, as a child
process on a free loopback port, stopped by its PID."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import psutil

from quart_chat.testing import LOOPBACK, ServerProcess

#: The commands of docs/deploying.md ("Which ASGI server"), ``{port}`` filled in.
COMMANDS: dict[str, tuple[str, ...]] = {
    "hypercorn": ("-m", "quart_chat", "serve", "--bind", f"{LOOPBACK}:{{port}}"),
    "uvicorn": ("-m", "uvicorn", "--factory", "quart_chat.app:create_app", "--host", LOOPBACK,
                "--port", "{port}"),
    "granian": ("-m", "granian", "--interface", "asgi", "--factory", "--host", LOOPBACK,
                "--port", "{port}", "quart_chat.app:create_app"),
}
SERVERS = tuple(COMMANDS)


class Served(ServerProcess):
    """One server process running the app, configured by ``QUART_CHAT_*`` variables."""

    def __init__(self, server: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__({"QUART_CHAT_LOG_LEVEL": "info", **(env or {})})
        self.server = server

    def command(self) -> list[str]:
        return [sys.executable, *(a.format(port=self.port) for a in COMMANDS[self.server])]

    def rss_kib(self) -> int:
        """Resident memory of the server and its worker processes, in KiB."""
        root = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) // 1024
