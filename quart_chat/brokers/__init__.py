"""Broker backends, picked by URL scheme; Redis is imported only when used."""

from __future__ import annotations

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
    raise ConfigError(
        f"QUART_CHAT_REDIS_URL: unsupported scheme {scheme!r}; use redis://, rediss:// "
        "or unset for the embedded broker"
    )
