"""Moderation filter: mask or reject listed words; repeat offenders cool down.

Load it with ``quart-chat serve -p moderation`` (with this folder on ``PYTHONPATH``) or
``--plugins-dir plugins``. Settings (environment variables, read at startup):

=========================================  ===========================  ==================
``QUART_CHAT_PLUGIN_MODERATION_WORDS``     comma-separated words         ``spam,scam``
``QUART_CHAT_PLUGIN_MODERATION_MODE``      ``mask`` (``s**m``) or        ``mask``
                                           ``reject`` (error ``rejected``)
``QUART_CHAT_PLUGIN_MODERATION_STRIKES``   hits within ``WINDOW`` that   ``3``
                                           start a cool-down
``QUART_CHAT_PLUGIN_MODERATION_WINDOW``    seconds hits are remembered   ``60``
``QUART_CHAT_PLUGIN_MODERATION_COOLDOWN``  seconds a client may not      ``30``
                                           publish after its last strike
=========================================  ===========================  ==================

Words match whole words, case-insensitively. Bots (``session is None``) are trusted.
Hits are counted per client id in this process: with several server processes a client
could spread its hits over them (keep the counts in Redis if that matters to you).
"""

from __future__ import annotations

import re
import time
from collections import deque

from quart_chat import Message, Rejected, hookimpl, plugin_settings

#: The clock, a module attribute so tests can move time forward.
now = time.monotonic

#: Most clients whose hits are remembered; the oldest are forgotten beyond this.
MAX_TRACKED = 10_000

_pattern: re.Pattern[str] | None = None
_mode = "mask"
_strikes = 3
_window = 60.0
_cooldown = 30.0
_hits: dict[str, deque[float]] = {}
_cooling_until: dict[str, float] = {}


@hookimpl
def startup() -> None:
    global _pattern, _mode, _strikes, _window, _cooldown
    config = plugin_settings("moderation", words=("spam", "scam"), mode="mask", strikes=3,
                             window=60.0, cooldown=30.0)
    if config.mode not in ("mask", "reject"):
        raise ValueError(
            f"QUART_CHAT_PLUGIN_MODERATION_MODE must be mask or reject, not {config.mode!r}")
    words = "|".join(map(re.escape, sorted(config.words, key=len, reverse=True)))
    _pattern = re.compile(rf"\b(?:{words})\b", re.IGNORECASE) if words else None
    _mode, _strikes = config.mode, config.strikes
    _window, _cooldown = config.window, config.cooldown
    _hits.clear()
    _cooling_until.clear()


@hookimpl
async def filter_message(message: Message, session: object | None) -> Message | None:
    if session is None or _pattern is None:
        return None
    client = message.sender
    t = now()
    until = _cooling_until.get(client)
    if until is not None:
        if t < until:
            raise Rejected(f"you are cooling down for {until - t:.0f} more seconds")
        del _cooling_until[client]
    text, count = _pattern.subn(_mask, message.text)
    if not count:
        return None
    _strike(client, t)
    if _mode == "reject":
        raise Rejected("your message contains a word that is not allowed here")
    return message.replace(text=text)


def _mask(match: re.Match[str]) -> str:
    word = match.group()
    return word[0] + "*" * (len(word) - 2) + word[-1] if len(word) > 2 else "*" * len(word)


def _strike(client: str, t: float) -> None:
    hits = _hits.setdefault(client, deque())
    hits.append(t)
    while hits and hits[0] <= t - _window:
        hits.popleft()
    if len(hits) >= _strikes:
        _cooling_until[client] = t + _cooldown
        hits.clear()
    if len(_hits) > MAX_TRACKED:  # forget the clients seen longest ago
        for stale in list(_hits)[: len(_hits) - MAX_TRACKED]:
            del _hits[stale]
