"""What the Redis-family backends (one Redis, Cluster, Sentinel) share: timeouts, the
bounded publish, confirmations of (S)SUBSCRIBE, URL parsing and redaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from redis.exceptions import RedisError

from ..errors import ConfigError, Unavailable

#: Errors that mean "Redis is not reachable right now" rather than a bug.
REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.0
SUBSCRIBE_TIMEOUT = 5.0
#: First wait before a lost pub/sub connection is tried again (doubled per failure).
BACKOFF_FIRST = 0.05
#: The longest a publish may take (a pool connection and one retry fit in it): past it the
#: client hears ``unavailable`` and retries instead of waiting on a command that hangs.
PUBLISH_TIMEOUT = 2 * COMMAND_TIMEOUT

#: A node's address: (host, port).
Addr = tuple[str, int]


class PubSubStalled(Exception):
    """The pub/sub connection is not delivering (no probe or reply came back, or it was
    lost while a subscriber waited)."""


async def bounded_publish(command: Awaitable[Any],
                          failures: tuple[type[BaseException], ...] = REDIS_DOWN) -> int:
    """Await a (S)PUBLISH for at most ``PUBLISH_TIMEOUT``, returning how many subscribers
    Redis delivered to; one of ``failures`` (which must include ``TimeoutError``, as
    ``REDIS_DOWN`` does) becomes :class:`Unavailable`."""
    try:
        return int(await asyncio.wait_for(command, PUBLISH_TIMEOUT))
    except failures as exc:
        raise Unavailable("the message broker is unreachable; retry shortly") from exc


def text(value: Any) -> str:
    """A Redis reply item as text (redis-py returns bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Confirmations:
    """Subscribers waiting for Redis to confirm a (S)SUBSCRIBE, per wire channel.

    ``subscribe`` must return only once the subscription is live, but the confirmation
    arrives on the pub/sub connection's reader: the caller waits on a future that the
    reader resolves, or fails when the connection is lost.
    """

    def __init__(self) -> None:
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}

    @contextlib.contextmanager
    def expect(self, wire: bytes) -> Iterator[asyncio.Future[None]]:
        """A future resolved by :meth:`confirm` (or failed by :meth:`fail`) for ``wire``;
        forgotten when the block ends, however it ends."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wire, []).append(future)
        try:
            yield future
        finally:
            waiting = self._waiting.get(wire, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(wire, None)

    def confirm(self, wire: bytes) -> None:
        for future in self._waiting.pop(wire, []):
            if not future.done():
                future.set_result(None)

    def fail(self, wires: Iterable[bytes], exc: BaseException) -> None:
        for wire in list(wires):
            for future in self._waiting.pop(wire, []):
                if not future.done():
                    future.set_exception(exc)

    def fail_all(self, exc: BaseException) -> None:
        self.fail(self._waiting, exc)


# -- URLs ------------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with its credentials replaced by ``***``, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return url
    return f"{scheme}{sep}***@{netloc.rpartition('@')[2]}{slash}{path}"


def split_url(url: str, scheme: str) -> tuple[str, str, str]:
    """``scheme://netloc/path?query`` -> (netloc, path, query); a ConfigError (with the
    URL redacted) for another scheme."""
    given, sep, rest = url.partition("://")
    if given != scheme or not sep:
        raise ConfigError(f"QUART_CHAT_REDIS_URL: not a {scheme}:// URL: {redact(url)}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    return netloc, path, query


def split_credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """``user:password@hosts`` -> (user, password, hosts); percent-escapes decoded."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    if not colon:  # "secret@host": a password alone, as redis-py reads it
        return None, unquote(user) or None, hosts
    return unquote(user) or None, unquote(password) or None, hosts


def parse_hosts(hosts: str, url_for_errors: str, default_port: int) -> tuple[Addr, ...]:
    """``h:p,h:p,[::1]:p`` -> addresses; a missing port is ``default_port``."""
    addrs = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ConfigError(f"QUART_CHAT_REDIS_URL: no host in {item!r} of {url_for_errors}")
        try:
            number = int(port) if port else default_port
        except ValueError:
            raise ConfigError(
                f"QUART_CHAT_REDIS_URL: bad port in {item!r} of {url_for_errors}"
            ) from None
        if not 0 < number < 65536:
            raise ConfigError(f"QUART_CHAT_REDIS_URL: bad port in {item!r} of {url_for_errors}")
        addrs.append((host, number))
    if not addrs:
        raise ConfigError(f"QUART_CHAT_REDIS_URL: no host:port in {url_for_errors}")
    return tuple(addrs)
