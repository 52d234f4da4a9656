"""Broker backends, picked by URL scheme; Redis is imported only when used.

The URL forms are a contract users script against:

- ``redis://[[user]:password@]host:port/db`` (``rediss://``, ``unix://``): one Redis;
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: Redis Cluster, any
  seed nodes; channels use sharded pub/sub (:mod:`.cluster`);
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]``:
  the primary Sentinel names, followed across failovers (:mod:`.sentinel`).
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..errors import ConfigError
from ..stores.base import Store
from .base import Broker

REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_backend(settings: Settings, node_id: str) -> tuple[Broker, Store]:
    """The broker and store for ``settings.redis_url`` (embedded when unset)."""
    url = settings.redis_url
    if not url or url.startswith("memory://"):
        from ..stores.memory import MemoryStore
        from .memory import MemoryBroker

        return MemoryBroker(), MemoryStore()
    scheme = url.split("://", 1)[0]
    if scheme in REDIS_SCHEMES:
        from ..stores.redis import RedisStore
        from .redis import RedisBroker, command_client

        client = command_client(url, f"{settings.key_prefix}:{node_id}:commands")
        broker = RedisBroker(
            url,
            prefix=settings.key_prefix,
            node_id=node_id,
            client=client,
            probe_interval=settings.redis_probe_interval,
        )
        return broker, RedisStore(client, prefix=settings.key_prefix)
    if scheme == "redis+cluster":
        from .cluster import open_cluster

        return open_cluster(url, settings, node_id)
    if scheme == "redis+sentinel":
        from .sentinel import open_sentinel

        return open_sentinel(url, settings, node_id)
    raise ConfigError(
        f"QUART_CHAT_REDIS_URL: unsupported scheme {scheme!r}; use redis://, rediss://, "
        "redis+cluster://, redis+sentinel:// or unset for the embedded broker"
    )


def redis_client(url: str, client_name: str = "quart-chat:plugin") -> Any:
    """A command client for any of the Redis URL forms, for plugins that keep their own
    data (a history stream, say): ``redis.asyncio.Redis`` for ``redis://``, a
    ``RedisCluster`` for ``redis+cluster://``, the Sentinel primary's client for
    ``redis+sentinel://``. On a cluster, key per-channel data with
    :func:`quart_chat.stores.cluster.channel_key` so it lives on the channel's shard.
    """
    scheme = url.split("://", 1)[0]
    if scheme == "redis+cluster":
        from .cluster import cluster_client, parse_cluster_url

        return cluster_client(parse_cluster_url(url), client_name)
    if scheme == "redis+sentinel":
        from .sentinel import sentinel_client

        return sentinel_client(url, client_name)
    if scheme in REDIS_SCHEMES:
        from .redis import command_client

        client = command_client(url, client_name)
        client.auto_close_connection_pool = True  # aclose() releases its pool too
        return client
    raise ConfigError(f"not a Redis URL: {scheme}://")
