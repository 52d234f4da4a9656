"""Persistence: keep the last messages of every channel in memory and serve ``history``."""

from __future__ import annotations

from collections import defaultdict, deque

from quart_chat import Message, hookimpl

KEEP = 500
_kept: defaultdict[str, deque[Message]] = defaultdict(lambda: deque(maxlen=KEEP))


@hookimpl
def message_published(message: Message) -> None:
    _kept[message.channel].append(message)


@hookimpl
def history(channel: str, limit: int, before: str | None) -> list[Message]:
    """Newest first; with ``before``, only messages older than that message id."""
    messages = list(_kept.get(channel, ()))
    if before is not None:
        mids = [m.mid for m in messages]
        messages = messages[: mids.index(before)] if before in mids else []
    return messages[::-1][:limit]
