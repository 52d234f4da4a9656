"""Moderation: mask unwanted words, refuse messages that look like spam.

A minimal stand-in for the example plugins in the repository's ``plugins/`` folder,
so notebook 2 runs on its own.
"""

from __future__ import annotations

import re

from quart_chat import Message, Rejected, hookimpl

MASKED = ("darn", "heck")
_MASK = re.compile(r"\b(" + "|".join(MASKED) + r")\b", re.IGNORECASE)


@hookimpl
def filter_message(message: Message) -> Message | None:
    """Mask listed words with asterisks; reject links to 'cheap' offers."""
    if "cheap" in message.text.lower() and "http" in message.text.lower():
        raise Rejected("looks like spam: links to cheap offers are not allowed")
    masked = _MASK.sub(lambda match: "*" * len(match.group()), message.text)
    return message.replace(text=masked) if masked != message.text else None
