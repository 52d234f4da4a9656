"""The servers under test: how to start each one, and how to read its CPU time and memory.

Every server is a child process on a free loopback port, using the run's private
redis-server, optionally pinned to one CPU; it is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from quart_chat.testing import LOOPBACK, free_port, wait_for_port

PY = sys.executable


@dataclass(frozen=True)
class ServerSpec:
    """A server configuration: its argv (``{port}`` and ``{redis}`` filled in) and adapter."""

    name: str
    argv: tuple[str, ...]
    adapter: str  # key of loadgen.ADAPTERS
    kind: str  # "quart-chat", "floor", "thin-quart" or "peer"
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


_QC_ENV = {
    # The benchmark publishes far faster than the per-session default allows.
    "QUART_CHAT_PUBLISH_RATE": "1000000",
    "QUART_CHAT_PUBLISH_BURST": "1000000",
    "QUART_CHAT_LOG_LEVEL": "warning",
    "QUART_CHAT_REDIS_URL": "{redis}",
}
_UVICORN = (PY, "-m", "uvicorn", "--host", LOOPBACK, "--port", "{port}", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning")
_GRANIAN = (PY, "-m", "granian", "--interface", "asgi", "--host", LOOPBACK, "--port", "{port}",
            "--loop", "uvloop", "--workers", "1", "--log-level", "warning", "--no-ws")


def _granian(target: str, factory: bool = False) -> tuple[str, ...]:
    argv = tuple(a for a in _GRANIAN if a != "--no-ws")
    return (*argv, *(("--factory",) if factory else ()), target)


SPECS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec("floor", (PY, "-m", "bench.peers.floor", "{port}"), "json", "floor",
                   note="websockets library + one redis.asyncio pub/sub connection, no ASGI"),
        ServerSpec("floor+batch", (PY, "-m", "bench.peers.floor", "{port}"), "json-batch",
                   "floor", note="the floor with ?batch=1 write coalescing"),
        ServerSpec("thin-quart/hypercorn",
                   (PY, "-m", "hypercorn", "-k", "uvloop", "-b", f"{LOOPBACK}:{{port}}",
                    "bench.peers.thin_quart:app"), "json", "thin-quart",
                   note="the thinnest Quart app doing the same fan-out"),
        ServerSpec("quart-chat/hypercorn",
                   (PY, "-m", "quart_chat", "serve", "-b", f"{LOOPBACK}:{{port}}"), "json",
                   "quart-chat", env=_QC_ENV, note="the documented default"),
        ServerSpec("quart-chat/hypercorn+batch",
                   (PY, "-m", "quart_chat", "serve", "-b", f"{LOOPBACK}:{{port}}"), "json-batch",
                   "quart-chat", env=_QC_ENV, note="clients opt into ?batch=1"),
        ServerSpec("quart-chat/uvicorn",
                   (*_UVICORN, "--factory", "quart_chat.app:create_app"), "json", "quart-chat",
                   env=_QC_ENV),
        ServerSpec("quart-chat/uvicorn+batch",
                   (*_UVICORN, "--factory", "quart_chat.app:create_app"), "json-batch",
                   "quart-chat", env=_QC_ENV),
        ServerSpec("quart-chat/granian", _granian("quart_chat.app:create_app", factory=True),
                   "json", "quart-chat", env=_QC_ENV),
        ServerSpec("quart-chat/granian+batch",
                   _granian("quart_chat.app:create_app", factory=True), "json-batch",
                   "quart-chat", env=_QC_ENV),
        ServerSpec("broadcaster", (*_UVICORN, "bench.peers.broadcaster_app:app"), "json", "peer",
                   note="encode/broadcaster + Starlette on uvicorn"),
        ServerSpec("socketio", (*_UVICORN, "bench.peers.socketio_app:app"), "socketio", "peer",
                   note="python-socketio ASGI + AsyncRedisManager on uvicorn"),
        ServerSpec("channels", (*_UVICORN, "bench.peers.channels_app:application"), "json",
                   "peer", note="Django Channels + channels_redis pub/sub layer on uvicorn"),
    ]
}
PEERS = ("broadcaster", "socketio", "channels")


class RunningServer:
    """A started server process (tree) with CPU and memory probes."""

    def __init__(self, spec: ServerSpec, redis_url: str, *, cpu: int | None,
                 workers: int = 1) -> None:
        self.spec = spec
        self.port = free_port()
        self.redis_url = redis_url
        self.cpu = cpu
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        fd, self._log_path = tempfile.mkstemp(prefix=f"bench-{spec.name.replace('/', '-')}-",
                                              suffix=".log")
        os.close(fd)

    @property
    def base_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 30.0) -> RunningServer:
        fill = {"port": str(self.port), "redis": self.redis_url}
        argv = [a.format(**fill) for a in self.spec.argv]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        env = {**os.environ, "BENCH_REDIS_URL": self.redis_url,
               **{k: v.format(**fill) for k, v in self.spec.env.items()}}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.getcwd(), env.get("PYTHONPATH", "")) if p)
        preexec: Callable[[], None] | None = None
        if self.cpu is not None:
            cpu = self.cpu

            def preexec() -> None:
                os.sched_setaffinity(0, {cpu})

        with open(self._log_path, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=preexec, start_new_session=True)
        try:
            wait_for_port(self.port, timeout)
            time.sleep(0.5)  # lifespan startup (broker connect) finishes after the bind
            if self.process.poll() is not None:
                raise TimeoutError("exited")
        except TimeoutError:
            text = self.log()[-3000:]
            self.stop()
            raise RuntimeError(f"{self.spec.name} did not start; log:\n{text}") from None
        return self

    def _tree(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server's process tree so far."""
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def cpu_split(self) -> list[float]:
        """CPU seconds per process of the tree (supervisor first)."""
        out = []
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out.append(times.user + times.system)
        return out

    def rss(self) -> int:
        """Resident memory of the server's process tree, in bytes."""
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def log(self) -> str:
        with open(self._log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        """SIGTERM the process group we started (by PID), then SIGKILL if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(OSError):
            os.unlink(self._log_path)
        self.process = None
