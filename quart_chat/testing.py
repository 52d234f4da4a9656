"""Real servers for tests, notebooks and benchmarks: no mocks, loopback only.

- :class:`RedisServer` starts a private ``redis-server`` on a free port and stops it by PID.
- :class:`ServerThread` serves an app made by :func:`create_app` with hypercorn in a
  background thread (so plugins defined in a test or a notebook cell run in-process).
- :class:`ServerProcess` runs ``python -m quart_chat serve`` as a child process, for
  multi-process, signal and crash tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Self

from .config import Settings

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


def wait_for_health(base_url: str, timeout: float = 15.0) -> dict[str, Any]:
    """Block until ``GET /healthz`` answers 200; return its JSON."""
    import json

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


class RedisServer:
    """A private redis-server process: own port, no persistence, stopped by its PID."""

    def __init__(self, port: int | None = None, *extra_args: str) -> None:
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="quart-chat-redis-")

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.executable or "redis-server", "--port", str(self.port), "--bind", LOOPBACK,
                "--save", "", "--appendonly", "no", "--dir", self.dir, *self.extra_args]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_serving()
        return self

    def _wait_until_serving(self) -> None:
        """Until this process answers on its port. A port that was free when chosen can be
        taken by another listener before we bind it, and that one would answer too."""
        wait_for_port(self.port)
        assert self.process is not None
        if f"process_id:{self.process.pid}" not in self.cli("INFO", "server"):
            self.stop()
            raise RuntimeError(f"port {self.port} was taken by another process before "
                               "redis-server could listen on it")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a stalled Redis)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        """Run a command with redis-cli against this server; its output."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             check=True, timeout=10)
        return out.stdout.decode()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class _LoopbackAddress:
    """The URLs of a server listening on ``LOOPBACK:port``."""

    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws"


class ServerThread(_LoopbackAddress):
    """Serve ``create_app(settings, plugins=...)`` with hypercorn in a background thread."""

    def __init__(self, settings: Settings | None = None, *, plugins: Iterable[object] = (),
                 port: int | None = None) -> None:
        from .app import create_app

        self.port = port or free_port()
        self.settings = (settings or Settings()).replace(bind=f"{LOOPBACK}:{self.port}")
        self.app = create_app(self.settings, plugins=plugins)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def service(self) -> Any:
        from .app import chat_service

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
        # Pings make live clients answer (pongs); quiet dead peers are closed (4001).
        config.websocket_ping_interval = self.settings.ping_interval
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


class ServerProcess(_LoopbackAddress):
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

    def start(self, timeout: float = 20.0) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "quart_chat", "serve", *self.args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
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


# -- Redis Cluster and Sentinel (issue 7) ------------------------------------------------


def redis_version() -> tuple[int, ...]:
    """The installed ``redis-server`` version, e.g. ``(7, 0, 15)``."""
    out = subprocess.run(["redis-server", "--version"], capture_output=True, check=True,
                         timeout=10).stdout.decode()
    version = out.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
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


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class _ServerGroup(ABC):
    """Redis servers used as one: ``with`` stops them all, also when starting fails
    half-way (a node that did start must not outlive the test)."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def _members(self) -> list[RedisServer]:
        """Every server of the group, in the order they are stopped."""

    def stop(self) -> None:
        for server in self._members():
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalCluster(_ServerGroup):
    """A private Redis Cluster on loopback: ``primaries`` shards with ``replicas`` each.

    Every node is a :class:`RedisServer` (own port, own cluster bus port, stopped by its
    PID). ``node_timeout_ms`` is short so a killed primary fails over in seconds.
    """

    def __init__(self, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        if redis_version() < (7,):
            raise RuntimeError("sharded pub/sub needs redis-server 7.0 or later")
        self.primaries, self.replicas = primaries, replicas
        count = primaries * (1 + replicas)
        ports = _free_ports(2 * count)
        self.nodes = [
            RedisServer(ports[2 * i], "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(node_timeout_ms),
                        "--cluster-port", str(ports[2 * i + 1]),
                        # a young replica may always take over (no data-age check)
                        "--cluster-replica-validity-factor", "0",
                        "--logfile", "redis.log")
            for i in range(count)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes)

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"{LOOPBACK}:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, check=True, timeout=60,
        )
        self.wait_healthy()
        return self

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and all agree on the owners."""

        def healthy() -> bool:
            alive = self.alive()
            if not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in alive):
                return False
            views = {repr(sorted(self.owners(n).items())) for n in alive}
            primaries = {port for port, _ in self.owners(alive[0]).items()}
            return len(views) == 1 and len(primaries) == self.primaries
        _wait_until(healthy, "cluster not healthy", timeout)

    def node_ids(self) -> dict[int, str]:
        """port -> node id."""
        return {n.port: n.cli("CLUSTER", "MYID").strip() for n in self.alive()}

    def owners(self, asked: RedisServer | None = None) -> dict[int, list[tuple[int, int]]]:
        """primary port -> its slot ranges, as ``asked`` (a live node) sees them."""
        asked = asked or self.alive()[0]
        table: dict[int, list[tuple[int, int]]] = {}
        for line in asked.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 8 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            ranges = []
            for item in fields[8:]:
                if item.startswith("["):
                    continue  # a slot being imported or migrated
                start, _, end = item.partition("-")
                ranges.append((int(start), int(end or start)))
            if ranges:
                table[port] = ranges
        return table

    def owner(self, slot: int) -> RedisServer:
        """The live primary that owns ``slot``."""
        for port, ranges in self.owners().items():
            if any(start <= slot <= end for start, end in ranges):
                return self.server(port)
        raise LookupError(f"no primary owns slot {slot}")

    def server(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        primary_id = primary.cli("CLUSTER", "MYID").strip()
        return [n for n in self.alive() if n is not primary
                and f"slave {primary_id}" in n.cli("CLUSTER", "NODES").split("myself", 1)[1]
                .splitlines()[0]]

    def migrate_slot(self, slot: int, target: RedisServer) -> None:
        """Move ``slot`` and its keys to ``target`` the way ``redis-cli --cluster
        reshard`` does: IMPORTING, MIGRATING, MIGRATE the keys, then NODE everywhere."""
        source = self.owner(slot)
        ids = self.node_ids()
        target.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source.port])
        source.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target.port])
        for _ in range(10_000):
            keys = source.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
            if not keys:
                break
            source.cli("MIGRATE", LOOPBACK, str(target.port), "", "0", "5000", "KEYS", *keys)
        target.cli("CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])
        source.cli("CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])
        for node in self.alive():
            if node not in (source, target) and "master" in node.cli("ROLE"):
                node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node by its PID (a crash, not a shutdown)."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()
        node.process = None

    def _members(self) -> list[RedisServer]:
        return self.nodes


class SentinelServer(RedisServer):
    """``redis-server sentinel.conf --sentinel`` watching one primary."""

    def __init__(self, service: str, primary_port: int, quorum: int = 2,
                 down_after_ms: int = 1000, port: int | None = None) -> None:
        super().__init__(port)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as conf:
            conf.write(
                f"port {self.port}\nbind {LOOPBACK}\ndir {self.dir}\n"
                f"sentinel monitor {service} {LOOPBACK} {primary_port} {quorum}\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} 10000\n"
                f"sentinel parallel-syncs {service} 1\n"
            )

    def start(self) -> SentinelServer:
        self.process = subprocess.Popen([self.executable or "redis-server", self.conf,
                                         "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_serving()
        return self


class LocalSentinel(_ServerGroup):
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels, all on loopback."""

    def __init__(self, service: str = "quart-chat", replicas: int = 1,
                 sentinels: int = 3) -> None:
        self.service = service
        ports = _free_ports(1 + replicas + sentinels)  # distinct, unlike separate picks
        self.primary = RedisServer(ports.pop())
        self.replica_servers = [
            RedisServer(ports.pop(), "--replicaof", LOOPBACK, str(self.primary.port))
            for _ in range(replicas)
        ]
        self.sentinels = [SentinelServer(service, self.primary.port, quorum=sentinels // 2 + 1,
                                         port=ports.pop()) for _ in range(sentinels)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replica_servers]

    def start(self) -> LocalSentinel:
        for server in self.servers:
            server.start()
        _wait_until(lambda: f"connected_slaves:{len(self.replica_servers)}"
                    in self.primary.cli("INFO", "replication"), "replicas not connected")
        for sentinel in self.sentinels:
            sentinel.start()
        others = len(self.sentinels) - 1

        def ready() -> bool:
            for sentinel in self.sentinels:
                state = self.master_state(sentinel)
                if (int(state.get("num-other-sentinels", -1)) != others
                        or int(state.get("num-slaves", -1)) != len(self.replica_servers)):
                    return False
            return True
        _wait_until(ready, "sentinels do not see each other and the replicas", 30)
        return self

    def master_state(self, sentinel: RedisServer) -> dict[str, str]:
        lines = sentinel.cli("SENTINEL", "MASTER", self.service).splitlines()
        return dict(zip(lines[::2], lines[1::2], strict=False))

    def primary_port(self) -> int:
        """The primary's port according to the first Sentinel that answers."""
        for sentinel in self.sentinels:
            try:
                out = sentinel.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service).split()
            except subprocess.SubprocessError:
                continue
            if len(out) == 2:
                return int(out[1])
        raise LookupError("no sentinel answered")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary by its PID; the killed server."""
        port = self.primary_port()
        victim = next(s for s in self.servers if s.port == port)
        if victim.process is not None:
            victim.process.kill()
            victim.process.wait()
        victim.process = None
        return victim

    def wait_for_failover(self, old_port: int, timeout: float = 45.0) -> RedisServer:
        """Until every Sentinel names a new primary that says it is one; that server."""

        def promoted() -> bool:
            ports = {int(self.master_state(s).get("port", old_port)) for s in self.sentinels}
            if len(ports) != 1 or old_port in ports:
                return False
            server = next(s for s in self.servers if s.port in ports)
            return server.cli("ROLE").startswith("master")
        _wait_until(promoted, "no failover", timeout)
        return next(s for s in self.servers if s.port == self.primary_port())

    def _members(self) -> list[RedisServer]:
        return [*self.sentinels, *self.servers]


class TcpProxy:
    """A loopback TCP proxy that can cut or stall every connection it carries.

    Put it between a server and Redis (``redis://127.0.0.1:<proxy.port>``) to simulate
    network faults that a killed or SIGSTOPped redis-server cannot: :meth:`cut` closes
    every connection and refuses new ones (a dropped link), :meth:`stall` keeps every
    socket open but forwards nothing (a black hole: no RST, no FIN, just silence), and
    :meth:`restore` goes back to forwarding. One background thread, bounded buffers.
    """

    CHUNK = 64 * 1024

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.mode = "forward"
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"tcp proxy :{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def cut(self) -> None:
        """Close every carried connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self.mode = "cut"
            self._close_all()

    def stall(self) -> None:
        """Forward nothing, in either direction, on old and new connections alike."""
        with self._lock:
            self.mode = "stall"

    def restore(self) -> None:
        with self._lock:
            self.mode = "forward"

    @property
    def connections(self) -> int:
        return len(self._pairs) // 2

    def _close_all(self) -> None:
        for sock in list(self._pairs):
            with contextlib.suppress(OSError):
                sock.close()
        self._pairs.clear()

    def _run(self) -> None:
        import selectors

        assert self._listener is not None
        while self._running:
            # A fresh selector per round: sockets closed by cut() never linger in it. They
            # are registered under the lock, so cut() cannot close one in between.
            with selectors.DefaultSelector() as selector:
                with self._lock:
                    selector.register(self._listener, selectors.EVENT_READ)
                    if self.mode == "forward":
                        for sock in self._pairs:
                            selector.register(sock, selectors.EVENT_READ)
                ready = selector.select(0.05)
            for key, _ in ready:
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._pump(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        with self._lock:
            if self.mode == "cut":
                client.close()
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), 2)
            except OSError:
                client.close()
                return
            client.settimeout(2.0)  # sendall() never hangs the proxy thread for long
            upstream.settimeout(2.0)
            self._pairs[client] = upstream
            self._pairs[upstream] = client

    def _pump(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.get(sock)
            if peer is None or self.mode != "forward":
                return
            try:
                data = sock.recv(self.CHUNK)
                if data:
                    peer.sendall(data)
                    return
            except OSError:
                pass
            for end in (sock, peer):
                self._pairs.pop(end, None)
                with contextlib.suppress(OSError):
                    end.close()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._close_all()
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
