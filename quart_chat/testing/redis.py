"""Private Redis deployments for tests: one server, a Cluster, a Sentinel group.

Every server is a real ``redis-server`` on its own free loopback port, with no
persistence, stopped by its PID; nothing here ever touches the Redis on port 6379.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from abc import ABC, abstractmethod
from typing import Self

from .loopback import LOOPBACK, free_port, free_ports, wait_for_port, wait_until


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


def redis_version() -> tuple[int, ...]:
    """The installed ``redis-server`` version, e.g. ``(7, 0, 15)``."""
    out = subprocess.run(["redis-server", "--version"], capture_output=True, check=True,
                         timeout=10).stdout.decode()
    version = out.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in version.split(".") if part.isdigit())


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
        ports = free_ports(2 * count)
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
        wait_until(healthy, "cluster not healthy", timeout)

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
        ports = free_ports(1 + replicas + sentinels)  # distinct, unlike separate picks
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
        wait_until(lambda: f"connected_slaves:{len(self.replica_servers)}"
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
        wait_until(ready, "sentinels do not see each other and the replicas", 30)
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
        wait_until(promoted, "no failover", timeout)
        return next(s for s in self.servers if s.port == self.primary_port())

    def _members(self) -> list[RedisServer]:
        return [*self.sentinels, *self.servers]
