"""GitHub webhook: posts repository events into a channel (``register_routes``).

Point a GitHub webhook (content type ``application/json``) at
``https://YOUR-SERVER/hooks/github`` with a secret. Each delivery is checked against its
``X-Hub-Signature-256`` header (HMAC-SHA256 of the body with the secret, compared in
constant time); a missing or wrong signature gets HTTP 401 and posts nothing. Pushes,
pull requests, issues, releases and pings become one line each, e.g.
``alice pushed 2 commits to main of acme/rocket``.

Settings (environment variables, read when the server starts):

- ``QUART_CHAT_PLUGIN_GITHUB_WEBHOOK_SECRET`` — the webhook secret (unset: every
  delivery is refused with 503, so an unsigned endpoint is never open).
- ``QUART_CHAT_PLUGIN_GITHUB_WEBHOOK_CHANNEL`` — where to post (default ``github``).
- ``QUART_CHAT_PLUGIN_GITHUB_WEBHOOK_PATH`` — the route (default ``/hooks/github``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from quart import request

from quart_chat import hookimpl, plugin_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart_chat import Bot

BOT_NAME = "github"
#: Longest line posted (GitHub titles can be long; the server's limit is larger).
MAX_LINE = 500


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def summary(event: str, payload: dict[str, Any]) -> str:
    """One line for a GitHub event."""
    repo = payload.get("repository", {}).get("full_name", "?")
    who = payload.get("sender", {}).get("login", "someone")
    if event == "push":
        count = len(payload.get("commits", []))
        branch = str(payload.get("ref", "")).removeprefix("refs/heads/")
        return f"{who} pushed {count} commit{'s' * (count != 1)} to {branch} of {repo}"
    if event in ("pull_request", "issues"):
        item = payload.get("pull_request" if event == "pull_request" else "issue", {})
        kind = "PR" if event == "pull_request" else "issue"
        return (f"{who} {payload.get('action', 'updated')} {kind} #{item.get('number', '?')} "
                f"in {repo}: {item.get('title', '')}")
    if event == "release":
        tag = payload.get("release", {}).get("tag_name", "?")
        return f"{who} {payload.get('action', 'updated')} release {tag} of {repo}"
    if event == "ping":
        return f"webhook connected for {repo}"
    return f"{event} on {repo} by {who}"


@hookimpl
def register_routes(bot: Bot) -> list[tuple[str, Callable[[], Awaitable[Any]], list[str]]]:
    config = plugin_settings("github-webhook", secret="", channel="github",
                             path="/hooks/github")

    async def receive() -> tuple[dict[str, Any], int]:
        if not config.secret:
            return {"error": "QUART_CHAT_PLUGIN_GITHUB_WEBHOOK_SECRET is not set"}, 503
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        given = request.headers.get("X-Hub-Signature-256", "")
        if not hmac.compare_digest(given.encode(), signature(config.secret, body).encode()):
            return {"error": "missing or wrong X-Hub-Signature-256"}, 401
        try:
            payload = json.loads(body)
        except ValueError:
            return {"error": "the body is not JSON"}, 400
        if not isinstance(payload, dict):
            return {"error": "the body is not a JSON object"}, 400
        event = request.headers.get("X-GitHub-Event", "event")
        message = await bot.publish(config.channel, summary(event, payload)[:MAX_LINE])
        return {"ok": True, "mid": message.mid if message else None}, 200

    return [(config.path, receive, ["POST"])]
