"""What the Redis-family backends (one Redis, Cluster, Sentinel) share: timeouts, the
bounded publish, command batching, confirmations of (S)SUBSCRIBE, URL parsing and
redaction."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
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


class ProbeCount:
    """How many liveness probes went out on a pub/sub connection since the last answer.

    Counting probes rather than seconds keeps a paused process (a long garbage collection,
    a starved CPU) from passing for a dead connection: while the event loop is paused no
    probe goes out, so none goes unanswered, and the answer that waits in the socket is
    read once the loop runs again. A connection is stale once a second's worth of probes
    (and at least three) went unanswered."""

    def __init__(self, interval: float, where: str = "") -> None:
        self.limit = max(3, math.ceil(1.0 / interval))
        self.unanswered = 0
        #: Monotonic time of the last answer (or of the connection's start).
        self.answered_at = time.monotonic()
        self._where = where

    def sent(self) -> None:
        self.unanswered += 1

    def answered(self) -> None:
        self.unanswered = 0
        self.answered_at = time.monotonic()

    def check(self) -> None:
        """Raise :class:`PubSubStalled` if the connection counts as stale."""
        if self.unanswered >= self.limit:
            raise PubSubStalled(f"{self.unanswered} probes in a row unanswered{self._where}")


async def bounded_publish(command: Awaitable[Any],
                          failures: tuple[type[BaseException], ...] = REDIS_DOWN) -> int:
    """Await a (S)PUBLISH for at most ``PUBLISH_TIMEOUT``, returning how many subscribers
    Redis delivered to; one of ``failures`` (which must include ``TimeoutError``, as
    ``REDIS_DOWN`` does) becomes :class:`Unavailable`."""
    try:
        # asyncio.timeout, not wait_for: no task of its own, so no extra turns of the
        # event loop on the path every message takes
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            return int(await command)
    except failures as exc:
        raise Unavailable("the message broker is unreachable; retry shortly") from exc


#: One Redis command: its name and arguments, e.g. ``("SADD", key, member)``.
Command = tuple[Any, ...]
#: Most commands one batched pipeline carries (a storm sends several pipelines).
MAX_BATCH = 1024


class Pipeliner:
    """Commands many sessions send in the same moment, sent to Redis as a few pipelines.

    A reconnect storm (a deploy, a network blip) has thousands of sessions each asking
    for a round trip at once: with a command per pool connection, the pool runs dry
    while the event loop is busy and commands fail after the pool's wait. Here every
    command queued during one turn of the event loop goes out in one pipeline, with at
    most ``max_in_flight`` pipelines at a time (fewer than the pool's connections, so a
    pipeline never waits for one): a storm costs a few round trips, not thousands, as
    Centrifugo's Redis engine batches. A command whose caller was cancelled before its
    pipeline left is not sent.
    """

    def __init__(self, client: Any, *, max_in_flight: int) -> None:
        self._client = client
        self._max_in_flight = max_in_flight
        self._queue: deque[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def run(self, *commands: Command) -> list[Any]:
        """The replies to ``commands``, sent together in the next pipeline; the first
        reply that is an error (e.g. ``ResponseError``) is raised."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((commands, future))
        self._schedule()
        replies = await future
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def one(self, *command: Any) -> Any:
        """The reply to one ``command`` (name and arguments), sent in the next pipeline."""
        (reply,) = await self.run(command)
        return reply

    def _schedule(self) -> None:
        if not self._scheduled and len(self._in_flight) < self._max_in_flight:
            self._scheduled = True
            # In an empty context, so a pipeline task holds no session's context variables.
            task = asyncio.get_running_loop().create_task(
                self._send_queued(), context=contextvars.Context())
            self._in_flight.add(task)
            task.add_done_callback(self._sent)

    async def _send_queued(self) -> None:
        # The task's first step runs after the sessions ready in this turn queued theirs.
        self._scheduled = False
        batch, size = [], 0
        while self._queue and size < MAX_BATCH:
            commands, future = self._queue.popleft()
            if not future.done():  # its caller gave up: do not send it
                batch.append((commands, future))
                size += len(commands)
        if self._queue:
            self._schedule()  # the rest in another pipeline, alongside
        if batch:
            await self._send(batch)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._queue:
            self._schedule()

    async def _send(self, batch: list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]]
                    ) -> None:
        pipe = self._client.pipeline(transaction=False)
        for commands, _ in batch:
            for command in commands:
                pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        start = 0
        for commands, future in batch:
            if not future.done():
                future.set_result(replies[start:start + len(commands)])
            start += len(commands)


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
