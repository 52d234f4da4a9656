"""A plugin for the outbound-queue tests: every channel's history is ``limit`` messages
of 4,000 characters, so one ``history`` reply of 200 is about 0.9 MB."""

from __future__ import annotations

from quart_chat import Message, hookimpl

TEXT = "x" * 4000


@hookimpl
def history(channel: str, limit: int, before: str | None) -> list[Message]:
    return [Message(channel=channel, sender="archive", text=TEXT, ts=1.0 + n,
                    mid=f"{n:022x}") for n in range(limit)]
