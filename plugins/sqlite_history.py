"""Persistence with SQLite (aiosqlite): history that survives restarts, no Redis needed.

The embedded choice for a single server process: every published message is inserted
into one table, and ``history`` serves it newest first (insertion order), paging with
``before``; ``recover`` replays the messages inserted after a message id, oldest first, so
a reconnecting client gets ``recovered: true``. Needs ``pip install
'quart-chat[plugins]'`` (aiosqlite).

Settings (environment variables, read at startup):

- ``QUART_CHAT_PLUGIN_SQLITE_HISTORY_PATH`` — the database file
  (default ``quart-chat-history.sqlite3`` in the working directory).
- ``QUART_CHAT_PLUGIN_SQLITE_HISTORY_KEEP`` — messages kept per channel (``1000``);
  older ones are pruned every ``PRUNE_EVERY`` inserts into that channel.

Several processes may share the file (WAL mode, a busy timeout), but each insert then
waits for the file lock: use Redis Streams (``redis_history``) for many workers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiosqlite

from quart_chat import Message, hookimpl, plugin_settings

#: Inserts into one channel between two prunes of its old messages.
PRUNE_EVERY = 64

_db: aiosqlite.Connection | None = None
_keep = 1000
_inserts: dict[str, int] = {}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq     INTEGER PRIMARY KEY,
    mid     TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    sender  TEXT NOT NULL,
    text    TEXT NOT NULL,
    ts      REAL NOT NULL,
    bot     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel, seq);
"""


@hookimpl
async def startup() -> None:
    global _db, _keep
    config = plugin_settings("sqlite_history", path="quart-chat-history.sqlite3", keep=1000)
    _keep = config.keep
    _inserts.clear()
    _db = await aiosqlite.connect(config.path, timeout=5)
    await _db.execute("PRAGMA journal_mode=WAL")
    await _db.execute("PRAGMA synchronous=NORMAL")
    await _db.executescript(_SCHEMA)
    await _db.commit()


@hookimpl
async def shutdown() -> None:
    global _db
    if _db is not None:
        with contextlib.suppress(Exception):
            await _db.close()
    _db = None


@hookimpl
async def message_published(message: Message) -> None:
    assert _db is not None, "sqlite_history: startup did not run"
    await _db.execute(
        "INSERT OR IGNORE INTO messages (mid, channel, sender, text, ts, bot) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (message.mid, message.channel, message.sender, message.text, message.ts, message.bot),
    )
    count = _inserts[message.channel] = _inserts.get(message.channel, 0) + 1
    if count % PRUNE_EVERY == 0:
        await _db.execute(
            "DELETE FROM messages WHERE channel = ? AND seq < (SELECT seq FROM messages "
            "WHERE channel = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (message.channel, message.channel, _keep - 1),
        )
    await _db.commit()


@hookimpl
async def history(channel: str, limit: int, before: str | None) -> list[Message]:
    assert _db is not None, "sqlite_history: startup did not run"
    query = "SELECT channel, sender, text, ts, mid, bot FROM messages WHERE channel = ?"
    args: tuple[object, ...] = (channel,)
    if before is not None:
        # Older than ``before`` in insertion order; if it was pruned, by its id's time.
        query += (" AND seq < COALESCE((SELECT seq FROM messages WHERE mid = ?),"
                  " (SELECT MIN(seq) FROM messages WHERE channel = ? AND mid >= ?), 1 << 62)")
        args += (before, channel, before)
    query += " ORDER BY seq DESC LIMIT ?"
    async with _db.execute(query, (*args, limit)) as cursor:
        rows = await cursor.fetchall()
    return [_message(row) for row in rows]


@hookimpl
async def recover(channel: str, since: str, limit: int) -> list[Message] | None:
    assert _db is not None, "sqlite_history: startup did not run"
    # One statement, so one snapshot: ``since`` itself comes first when it is still kept,
    # and then nothing after it can have been pruned (pruning takes the oldest first).
    async with _db.execute(
        "SELECT channel, sender, text, ts, mid, bot FROM messages WHERE channel = ? AND seq >= "
        "(SELECT seq FROM messages WHERE mid = ? AND channel = ?) ORDER BY seq LIMIT ?",
        (channel, since, channel, limit + 1),
    ) as cursor:
        rows = list(await cursor.fetchall())
    if not rows or rows[0][4] != since:
        return None  # never stored, or pruned: nothing proves the gap is complete
    return [_message(row) for row in rows[1:]]


def _message(row: Any) -> Message:
    return Message(channel=row[0], sender=row[1], text=row[2], ts=row[3], mid=row[4],
                   bot=bool(row[5]))
