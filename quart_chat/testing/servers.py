"""quart-chat servers for tests, notebooks and benchmarks, on loopback.

- :class:`ServerThread` serves an app made by :func:`~quart_chat.create_app` with
  hypercorn in a background thread (so plugins defined in a test or a notebook cell run
  in-process).
- :class:`ServerProcess` runs ``python -m quart_chat serve`` as a child process, for
  multi-process, signal and crash tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..config import Settings
from .loopback import LOOPBACK, LoopbackAddress, free_port, wait_for_health


class ServerThread(LoopbackAddress):
    """Serve ``create_app(settings, plugins=...)`` with hypercorn in a background thread."""

    def __init__(self, settings: Settings | None = None, *, plugins: Iterable[object] = (),
                 port: int | None = None, entry_points: bool = True) -> None:
        from ..app import create_app

        self.port = port or free_port()
        # A server in a thread leaves its host process's garbage collector alone.
        self.settings = (settings or Settings()).replace(bind=f"{LOOPBACK}:{self.port}",
                                                         tune_gc=False)
        hide = contextlib.nullcontext() if entry_points else _without_entry_points()
        with hide:
            self.app = create_app(self.settings, plugins=plugins)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def service(self) -> Any:
        from ..app import chat_service

        return chat_service(self.app)

    def start(self, timeout: float = 15.0) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name=f"quart-chat :{self.port}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError(f"server failed to start: {self._error}") from self._error
            if not self._thread.is_alive():
                raise RuntimeError("server thread exited during startup")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), 0.2):
                return self
            time.sleep(0.02)
        raise TimeoutError(f"server on port {self.port} did not start in {timeout}s")

    def _run(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [self.settings.bind]
        config.graceful_timeout = 1.0
        config.websocket_max_message_size = self.settings.max_frame_bytes * 4
        # No websocket_ping_interval: quart_chat.liveness pings, as under ``serve``.
        config.accesslog = None
        config.errorlog = None
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()

        async def trigger() -> None:
            assert self._stop is not None
            await self._stop.wait()
            await self.service.close_sessions(1001, "server shutting down")

        try:
            loop.run_until_complete(serve(self.app, config, shutdown_trigger=trigger))
        except BaseException as exc:
            self._error = exc
        finally:
            loop.close()

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop (e.g. to inspect the hub); its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"server on port {self.port} did not stop in {timeout}s; "
                                   f"still running:\n{self._running_tasks()}")

    def _running_tasks(self) -> str:
        """Where each task of the server's loop is waiting (to debug a stuck stop)."""
        assert self._loop is not None
        lines = []
        for task in asyncio.all_tasks(self._loop):
            frames = task.get_stack(limit=3)
            where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames)
            lines.append(f"  {task.get_name()}: {where}")
        return "\n".join(sorted(lines))

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _without_entry_points() -> Iterator[None]:
    """Build a plugin manager that skips the installed entry-point plugins.

    The loader has no switch for that yet (issue 16: a disable list), so the entry
    points are hidden while :func:`create_app` builds its manager, which it does before
    returning. Only the constructing thread builds managers meanwhile.
    """
    from .. import plugins

    found = plugins._entry_points
    plugins._entry_points = list
    try:
        yield
    finally:
        plugins._entry_points = found


class ServerProcess(LoopbackAddress):
    """``python -m quart_chat serve`` as a child process, configured by environment."""

    def __init__(self, env: Mapping[str, str] | None = None, *args: str,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {}), "QUART_CHAT_BIND": f"{LOOPBACK}:{self.port}"}
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        with tempfile.NamedTemporaryFile(prefix="quart-chat-server-", suffix=".log",
                                         delete=False) as log:
            self.log_path = log.name

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        """The argv started: ``python -m quart_chat serve`` and the extra arguments."""
        return [sys.executable, "-m", "quart_chat", "serve", *self.args]

    def start(self, timeout: float = 20.0) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            wait_for_health(self.url, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"server did not start; its log:\n{self.log()}") from None
        return self

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``sig`` and wait; the exit status (None if it had to be killed)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
