"""Key names in Redis: the cluster hash tag, the per-channel key plugins may use, and the
wire kind that keeps the server's own channels apart from clients'.

Kept apart from the backends (and free of redis-py) so a plugin can name its keys
without loading a Redis client.
"""

from __future__ import annotations

#: The first character of the server's own channels (``@control``, see
#: :mod:`quart_chat.control`); the channel-name rules keep it out of client names.
RESERVED = "@"


def wire_kind(channel: str) -> str:
    """``ctl`` for a reserved channel, ``ch`` for a client's: a Redis broker sends them
    under ``P:ctl:`` and ``P:ch:``, so that a listing of client channels (``PUBSUB
    CHANNELS P:ch:*``, a cluster's shard channels) never shows the server's own."""
    return "ctl" if channel.startswith(RESERVED) else "ch"


def tagged(prefix: str, kind: str, owner: str) -> str:
    """``P:kind:{owner}``: the key of ``kind`` for a channel or client, in its slot."""
    return f"{prefix}:{kind}:{{{owner}}}"


def channel_key(prefix: str, kind: str, channel: str, *, cluster: bool) -> str:
    """The key of ``kind`` (``history``, ...) for ``channel``, for plugins keeping data.

    On a cluster it is hash-tagged so it lives on the channel's shard (with the
    channel's presence and shard channel); on one Redis it keeps the plain
    ``P:kind:channel`` form.
    """
    return tagged(prefix, kind, channel) if cluster else f"{prefix}:{kind}:{channel}"
