"""Sentinel (``redis+sentinel://``): the Redis broker and store, pointed at whichever node
Sentinel calls primary.

The URL form is ``redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]``.
The broker is :class:`~quart_chat.backends.redis.RedisBroker` with one change: every
pub/sub connection asks the Sentinels for the primary's address first. When the primary
dies, the pub/sub connection fails (or its probe stops coming back), the broker's own
reconnect loop asks again, finds the promoted replica, resubscribes every channel and
sends the hub a gap notice; sessions stay connected throughout. The command client
(publish, store) uses redis-py's Sentinel pool, which also asks on every new connection
and drops connections to a primary that was demoted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff

from ..config import Settings
from ..errors import ConfigError
from .base import Backend
from .redis import RedisBroker, RedisStore, shared
from .redis_support import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    REDIS_DOWN,
    Addr,
    Pipeliner,
    parse_hosts,
    redact,
    split_credentials,
    split_url,
)

SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """The Sentinels to ask, the name they monitor, and how to talk to the primary."""

    sentinels: tuple[Addr, ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[[user]:password@]host:port[,...]/master-name[/db]`` -> target.

    The credentials are those of the primary and replicas; Sentinels are asked without.
    """
    safe = redact(url)
    netloc, path, query = split_url(url, "redis+sentinel")
    parts = [p for p in path.split("/") if p]
    if query or not 1 <= len(parts) <= 2:
        raise ConfigError(
            f"QUART_CHAT_REDIS_URL: expected redis+sentinel://host:port[,host:port...]"
            f"/master-name[/db], got {safe}"
        )
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ConfigError(f"QUART_CHAT_REDIS_URL: bad database number in {safe}") from None
    username, password, hosts = split_credentials(netloc)
    return SentinelTarget(parse_hosts(hosts, safe, SENTINEL_PORT), parts[0], db,
                          username, password)


class SentinelBroker(RedisBroker):
    """:class:`RedisBroker` whose pub/sub connection follows the Sentinel primary."""

    name = "redis-sentinel"

    def __init__(self, target: SentinelTarget, sentinel: Sentinel, *, url: str, prefix: str,
                 node_id: str, client: aioredis.Redis, batch: Pipeliner | None = None,
                 probe_interval: float = 1.0) -> None:
        super().__init__(url, prefix=prefix, node_id=node_id, client=client, batch=batch,
                         probe_interval=probe_interval)
        self._target = target
        self._sentinel = sentinel

    def _pubsub_client(self) -> aioredis.Redis:
        client: aioredis.Redis = self._sentinel.master_for(
            self._target.service,
            db=self._target.db,
            username=self._target.username,
            password=self._target.password,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            client_name=self._client_name,
        )
        return client

    async def close(self) -> None:
        await super().close()
        for sentinel in self._sentinel.sentinels:
            with contextlib.suppress(*REDIS_DOWN):
                await sentinel.aclose()


class _OwnSentinelClient(aioredis.Redis):
    """A primary's client that also closes its connections to the Sentinels."""

    _sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self._sentinel.sentinels if self._sentinel else ():
            with contextlib.suppress(*REDIS_DOWN):
                await sentinel.aclose()


def _sentinel(target: SentinelTarget) -> Sentinel:
    return Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={"socket_connect_timeout": CONNECT_TIMEOUT,
                         "socket_timeout": COMMAND_TIMEOUT},
    )


def _primary_client(target: SentinelTarget, sentinel: Sentinel, client_name: str | None,
                    redis_class: type[aioredis.Redis] = aioredis.Redis) -> aioredis.Redis:
    client: aioredis.Redis = sentinel.master_for(
        target.service,
        redis_class=redis_class,
        db=target.db,
        username=target.username,
        password=target.password,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        client_name=client_name,
    )
    return client


def open(url: str, settings: Settings, node_id: str) -> Backend:
    """The broker, store (one Redis key layout) and node heartbeat for a Sentinel URL."""
    target = parse_sentinel_url(url)
    sentinel = _sentinel(target)
    commands = _primary_client(target, sentinel, f"{settings.key_prefix}:{node_id}:commands")
    store = RedisStore(commands, prefix=settings.key_prefix)
    broker = SentinelBroker(target, sentinel, url=url, prefix=settings.key_prefix,
                            node_id=node_id, client=commands, batch=store.batch,
                            probe_interval=settings.redis_probe_interval)
    return shared(broker, store)


def client(url: str, client_name: str) -> aioredis.Redis:
    """A command client of its own (a plugin's) for the primary the URL names; its
    ``aclose()`` also closes its connections to the Sentinels."""
    target = parse_sentinel_url(url)
    sentinel = _sentinel(target)
    primary = _primary_client(target, sentinel, client_name, _OwnSentinelClient)
    primary._sentinel = sentinel  # type: ignore[attr-defined]
    return primary
