"""A client for the server HTTP API (``POST /api/<method>``), for backends and scripts.

Standard library only (urllib), so importing it loads neither the server nor an HTTP
library::

    from quart_chat.server_api import ServerAPI

    api = ServerAPI("http://127.0.0.1:8000", api_key="s3cret")
    mid = api.publish("lobby", "deploy finished", sender="ci")

Errors the server answers become the :class:`~quart_chat.errors.ChatError` subclass of
their code (``api.publish("bad name", "x")`` raises ``InvalidChannel``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .errors import ChatError


class ServerAPI:
    """Calls the server API of the quart-chat server at ``url`` with ``api_key``."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._key = api_key

    def __repr__(self) -> str:
        return f"<ServerAPI {self.url}>"  # never the key

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """POST ``params`` to ``/api/<method>``; the answer's fields (without ``ok``)."""
        body = json.dumps({k: v for k, v in params.items() if v is not None}).encode()
        req = urllib.request.Request(
            f"{self.url}/api/{method}", data=body, method="POST",
            headers={"Content-Type": "application/json", "X-API-Key": self._key},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read())
            except ValueError:
                raise ChatError(f"HTTP {exc.code} from {self.url}") from None
            finally:
                exc.close()
        if not answer.get("ok"):
            raise ChatError.from_code(str(answer.get("code")), str(answer.get("message")))
        answer.pop("ok")
        return dict(answer)

    def publish(self, channel: str, text: str, sender: str | None = None) -> str:
        """Publish ``text`` to ``channel`` (as ``sender``, default "api"); the message id."""
        return str(self.call("publish", channel=channel, text=text, sender=sender)["mid"])

    def broadcast(self, channels: list[str], text: str, sender: str | None = None) -> list[str]:
        """Publish ``text`` to each of ``channels``; their message ids, in order."""
        return list(self.call("broadcast", channels=channels, text=text, sender=sender)["mids"])

    def presence(self, channel: str) -> list[str]:
        """Client ids with a session in ``channel`` (on any process)."""
        return list(self.call("presence", channel=channel)["clients"])

    def channels(self) -> list[str]:
        """Channels with at least one subscriber, on any process."""
        return list(self.call("channels")["channels"])

    def history(self, channel: str, limit: int | None = None,
                before: str | None = None) -> list[dict[str, Any]]:
        """Stored messages of ``channel``, newest first (needs a history plugin)."""
        return list(self.call("history", channel=channel, limit=limit, before=before)["messages"])

    def disconnect(self, client_id: str) -> int:
        """Close every session of ``client_id`` on every process; how many."""
        return int(self.call("disconnect", client_id=client_id)["sessions"])

    def subscribe(self, client_id: str, channel: str) -> int:
        """Subscribe every live session of ``client_id`` to ``channel``; how many."""
        return int(self.call("subscribe", client_id=client_id, channel=channel)["sessions"])

    def unsubscribe(self, client_id: str, channel: str) -> int:
        """Unsubscribe every session of ``client_id`` from ``channel``; how many."""
        return int(self.call("unsubscribe", client_id=client_id, channel=channel)["sessions"])

    def info(self) -> list[dict[str, Any]]:
        """One entry per server process: node id, sessions, clients, channels..."""
        return list(self.call("info")["nodes"])
