"""Persistence with Redis Streams: every message kept in a bounded per-channel stream.

Each published message is appended (``XADD ... MAXLEN``) to the stream
``<key_prefix>:history:<channel>`` (on Redis Cluster ``<key_prefix>:history:{<channel>}``,
so the stream lives on the channel's shard); ``history`` reads it newest first (``XREVRANGE``)
and pages with ``before`` (a message id); ``recover`` replays the entries after a message
id oldest first (``XRANGE`` with an exclusive start), so a reconnecting client gets
``recovered: true``. Every server process on the same Redis sees the same history, so it
works with many workers and machines.

Settings (environment variables, read at startup):

- ``QUART_CHAT_PLUGIN_REDIS_HISTORY_URL`` — Redis to keep history in (default: the
  server's ``QUART_CHAT_REDIS_URL``; one of the two is required).
- ``QUART_CHAT_PLUGIN_REDIS_HISTORY_MAXLEN`` — messages kept per channel (``1000``).
- ``QUART_CHAT_PLUGIN_REDIS_HISTORY_APPROXIMATE`` — trim with ``MAXLEN ~`` (cheaper,
  keeps a little more than ``MAXLEN``; default ``false``: exactly ``MAXLEN``).

Stream entry ids use the message's own millisecond (``<ms>-*``) so ``before`` finds its
place directly; if another process already wrote a later entry, Redis picks the id.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from quart_chat import (
    Message,
    channel_key,
    chat_service,
    hookimpl,
    plugin_settings,
    redis_client,
)
from quart_chat.errors import Unavailable

if TYPE_CHECKING:
    from quart import Quart

#: Entries scanned to find the exact position of a ``before`` or ``since`` id.
BEFORE_SCAN = 64

_redis: Any = None  # redis.asyncio.Redis, or RedisCluster for a redis+cluster:// URL
_prefix = "quart-chat"
_cluster = False
_maxlen = 1000
_approximate = False


@hookimpl
async def startup(app: Quart) -> None:
    global _redis, _prefix, _cluster, _maxlen, _approximate
    settings = chat_service(app).settings
    config = plugin_settings("redis_history", url=None, maxlen=1000, approximate=False)
    url = config.url or settings.redis_url
    if not url:
        raise RuntimeError("redis_history needs QUART_CHAT_PLUGIN_REDIS_HISTORY_URL or "
                           "QUART_CHAT_REDIS_URL")
    _redis = redis_client(url, f"{settings.key_prefix}:redis_history")
    await _redis.ping()  # fail at startup, not on the first message
    _prefix = settings.key_prefix
    _cluster = url.startswith("redis+cluster://")
    _maxlen, _approximate = config.maxlen, config.approximate


@hookimpl
async def shutdown() -> None:
    global _redis
    if _redis is not None:
        with contextlib.suppress(Exception):
            await _redis.aclose()
    _redis = None


@hookimpl
async def message_published(message: Message) -> None:
    assert _redis is not None, "redis_history: startup did not run"
    key = channel_key(_prefix, "history", message.channel, cluster=_cluster)
    fields: dict[Any, Any] = {
        "mid": message.mid, "sender": message.sender, "text": message.text,
        "ts": repr(message.ts), "bot": "1" if message.bot else "",
    }
    try:
        await _redis.xadd(key, fields, id=f"{_millis(message.mid)}-*", maxlen=_maxlen,
                          approximate=_approximate)
    except ResponseError:  # a later entry exists (another process, clock skew)
        await _redis.xadd(key, fields, maxlen=_maxlen, approximate=_approximate)


@hookimpl
async def history(channel: str, limit: int, before: str | None) -> list[Message]:
    assert _redis is not None, "redis_history: startup did not run"
    key = channel_key(_prefix, "history", channel, cluster=_cluster)
    try:
        end = "+"
        if before is not None:
            entry = await _entry_of(key, before)
            millis = _millis(before)
            end = f"({entry}" if entry else ("+" if millis is None else f"({millis}-0")
        entries = cast("list[Any]", await _redis.xrevrange(key, max=end, min="-", count=limit))
    except (RedisError, RedisClusterException, OSError) as exc:  # ``unavailable``: retry
        raise Unavailable("the history store (Redis) is unreachable") from exc
    return [_message(channel, fields) for _, fields in entries]


@hookimpl
async def recover(channel: str, since: str, limit: int) -> list[Message] | None:
    assert _redis is not None, "redis_history: startup did not run"
    key = channel_key(_prefix, "history", channel, cluster=_cluster)
    try:
        entry = await _entry_of(key, since)
        if entry is None:
            return None  # never stored, or trimmed: nothing proves the gap is complete
        entries = cast("list[Any]", await _redis.xrange(key, min=f"({entry}", max="+",
                                                        count=limit))
        # A stream is trimmed from its oldest end only: if ``since`` is still there, every
        # entry after it was there when they were read, so the list has no hole.
        if not await _redis.xrange(key, min=entry, max=entry, count=1):
            return None
    except (RedisError, RedisClusterException, OSError) as exc:  # ``unavailable``: retry
        raise Unavailable("the history store (Redis) is unreachable") from exc
    return [_message(channel, fields) for _, fields in entries]


async def _entry_of(key: str, mid: str) -> str | None:
    """The stream entry id of the message ``mid``, or None if it is not (or no longer) kept."""
    assert _redis is not None
    millis = _millis(mid)
    if millis is None:
        return None
    # The entry's id is at or just after its own millisecond: look there first.
    nearby = cast("list[Any]", await _redis.xrange(key, min=f"{millis}-0", max="+",
                                                   count=BEFORE_SCAN))
    for entry_id, fields in nearby:
        if fields.get(b"mid", b"").decode() == mid:
            return cast("str", entry_id.decode())
    return None


def _millis(mid: str) -> int | None:
    try:
        return int(mid[:12], 16)
    except ValueError:
        return None


def _message(channel: str, fields: dict[bytes, bytes]) -> Message:
    return Message(channel=channel, sender=fields[b"sender"].decode(),
                   text=fields[b"text"].decode(), ts=float(fields[b"ts"]),
                   mid=fields[b"mid"].decode(), bot=bool(fields.get(b"bot")))
