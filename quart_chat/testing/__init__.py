"""Real servers for tests, notebooks and benchmarks: no mocks, loopback only.

Grouped by what they start:

- :mod:`.servers`: quart-chat itself, in a thread (:class:`ServerThread`) or a child
  process (:class:`ServerProcess`);
- :mod:`.redis`: a private ``redis-server`` (:class:`RedisServer`), a Redis Cluster
  (:class:`LocalCluster`) and a Sentinel group (:class:`LocalSentinel`);
- :mod:`.faults`: a proxy that cuts or stalls the link to Redis (:class:`TcpProxy`);
- :mod:`.loopback`: free ports and bounded waits the others share.
"""

from __future__ import annotations

from .faults import TcpProxy
from .loopback import LOOPBACK, free_port, free_ports, wait_for_health, wait_for_port, wait_until
from .redis import LocalCluster, LocalSentinel, RedisServer, SentinelServer, redis_version
from .servers import ServerProcess, ServerThread

__all__ = [
    "LOOPBACK",
    "LocalCluster",
    "LocalSentinel",
    "RedisServer",
    "SentinelServer",
    "ServerProcess",
    "ServerThread",
    "TcpProxy",
    "free_port",
    "free_ports",
    "redis_version",
    "wait_for_health",
    "wait_for_port",
    "wait_until",
]
