"""Backends, one module per deployment, picked by URL scheme; Redis loads only when used.

The URL forms are a contract users script against:

- unset or ``memory://``: the embedded backend, one process (:mod:`.memory`);
- ``redis://[[user]:password@]host:port/db`` (``rediss://``, ``unix://``): one Redis
  (:mod:`.redis`);
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: Redis Cluster, any
  seed nodes; channels use sharded pub/sub (:mod:`.cluster`);
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]``:
  the primary Sentinel names, followed across failovers (:mod:`.sentinel`).

A backend module has ``open(url, settings, node_id) -> Backend``; the Redis family also
``client(url, client_name)`` for plugins. A new backend is one module and one entry in
:data:`SCHEMES`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from .base import Backend

#: URL scheme -> the module (in this package) that opens it.
SCHEMES = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+cluster": "cluster",
    "redis+sentinel": "sentinel",
}


def open_backend(settings: Settings, node_id: str) -> Backend:
    """The broker, store (and heartbeat, if any) for ``settings.redis_url``; the
    embedded backend when it is unset."""
    url = settings.redis_url or "memory://"
    scheme = url.split("://", 1)[0]
    if scheme not in SCHEMES:
        raise ConfigError(
            f"QUART_CHAT_REDIS_URL: unsupported scheme {scheme!r}; use redis://, rediss://, "
            "redis+cluster://, redis+sentinel:// or unset for the embedded broker"
        )
    backend: Backend = _module(scheme).open(url, settings, node_id)
    return backend


def redis_client(url: str, client_name: str = "quart-chat:plugin") -> Any:
    """A command client for any of the Redis URL forms, for plugins that keep their own
    data (a history stream, say): ``redis.asyncio.Redis`` for ``redis://``, a
    ``RedisCluster`` for ``redis+cluster://``, the Sentinel primary's client for
    ``redis+sentinel://``. Close it with ``aclose()``. On a cluster, key per-channel data
    with :func:`quart_chat.channel_key` so it lives on the channel's shard.
    """
    scheme = url.split("://", 1)[0]
    client = getattr(_module(scheme), "client", None) if scheme in SCHEMES else None
    if client is None:
        raise ConfigError(f"not a Redis URL: {scheme}://")
    return client(url, client_name)


def _module(scheme: str) -> Any:
    return importlib.import_module(f"{__name__}.{SCHEMES[scheme]}")
