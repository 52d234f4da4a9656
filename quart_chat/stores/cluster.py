"""The subscription record on Redis Cluster: the same records, hash-tagged by owner.

Key layout (``P`` is the prefix; the part in braces is the hash tag that picks the slot):

- ``P:presence:{<channel>}``             HASH session_id -> client_id, on the channel's
  shard: the same slot as the channel's shard channel ``P:ch:{<channel>}`` and its
  history stream ``P:history:{<channel>}``
- ``P:client:{<client_id>}``             SET of the client's live session ids
- ``P:session:{<client_id>}:<session_id>`` SET of channels the session is subscribed to,
  in the client's slot, so ``client_channels`` is one SUNION on one shard

One Redis (``redis://``) keeps the untagged layout of :mod:`quart_chat.stores.redis`.
Multi-key operations never cross slots except ``disconnect``, whose pipeline redis-py
splits per shard (it is not a transaction on one Redis either).
"""

from __future__ import annotations

from redis.asyncio import RedisCluster

from ..brokers.cluster import COMMAND_FAILED
from ..errors import Unavailable
from .redis import RedisStore


def tagged(prefix: str, kind: str, owner: str) -> str:
    """``P:kind:{owner}``: the key of ``kind`` for a channel or client, in its slot."""
    return f"{prefix}:{kind}:{{{owner}}}"


class ClusterStore(RedisStore):
    """:class:`RedisStore` with hash-tagged keys, over a ``RedisCluster`` client."""

    def __init__(self, client: RedisCluster, *, prefix: str) -> None:
        super().__init__(client, prefix=prefix)  # type: ignore[arg-type]

    def session_key(self, session_id: str, client_id: str) -> str:
        return f"{tagged(self._prefix, 'session', client_id)}:{session_id}"

    def client_key(self, client_id: str) -> str:
        return tagged(self._prefix, "client", client_id)

    def presence_key(self, channel: str) -> str:
        return tagged(self._prefix, "presence", channel)

    @staticmethod
    async def _run(awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except COMMAND_FAILED as exc:
            raise Unavailable("the subscription store (Redis Cluster) is unreachable") from exc


def channel_key(prefix: str, kind: str, channel: str, *, cluster: bool) -> str:
    """The key of ``kind`` (``history``, ...) for ``channel``, for plugins keeping data.

    On a cluster it is hash-tagged so it lives on the channel's shard; on one Redis it
    keeps the plain ``P:kind:channel`` form.
    """
    return tagged(prefix, kind, channel) if cluster else f"{prefix}:{kind}:{channel}"

