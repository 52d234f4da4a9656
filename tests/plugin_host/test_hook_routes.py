"""register_routes: plugin views on the app, publishing as a bot; the GitHub example."""

from __future__ import annotations

import json
from typing import Any

import pytest
from quart import request

from quart_chat import hookimpl
from quart_chat.errors import ConfigError
from quart_chat.testing import ServerThread

from ..helpers import http_json as http
from .kit import WAIT, load_example

github_webhook = load_example("github_webhook")


class Notify:
    """A plugin with a GET and a POST route; the POST one publishes as the plugin's bot."""

    BOT_NAME = "notifier"

    @hookimpl
    def register_routes(self, bot):
        async def hello(name: str) -> dict[str, str]:
            return {"hello": name}

        async def notify() -> dict[str, Any]:
            body = await request.get_json()
            message = await bot.publish(body["channel"], body["text"])
            return {"mid": message.mid}

        return [("/hello/<name>", hello), ("/notify", notify, ["POST"])]


def test_hook_register_routes_views_answer_and_publish_as_the_plugin_bot(serve):
    server = serve(Notify())
    alice = server.connect("alice")
    alice.subscribe("ops")
    assert http(f"{server.url}/hello/bob", method="GET") == (200, {"hello": "bob"})
    status, answer = http(f"{server.url}/notify",
                          json.dumps({"channel": "ops", "text": "disk 91%"}).encode(),
                          {"Content-Type": "application/json"})
    message = alice.receive(WAIT)
    assert status == 200 and answer["mid"] == message.mid
    assert (message.sender, message.text, message.bot) == ("notifier", "disk 91%", True)


@pytest.mark.parametrize(("routes", "words"), [
    ([("/healthz", lambda: "mine")], "taken"),
    ([("/api/mine", lambda: "mine")], "taken"),
    ([("no-slash", lambda: "x")], "rule"),
    ([("/x",)], "(rule, view)"),
    ("not a list", "must return a list"),
])
def test_hook_register_routes_a_bad_route_stops_startup_naming_the_plugin(routes, words):
    class Bad:
        @hookimpl
        def register_routes(self):
            return routes

    with pytest.raises(ConfigError, match="plugin Bad") as caught:
        ServerThread(plugins=[Bad()])
    assert words in str(caught.value)


def test_hook_register_routes_async_implementations_are_refused():
    class Async:
        @hookimpl
        async def register_routes(self):
            return []

    with pytest.raises(ConfigError, match="plain def"):
        ServerThread(plugins=[Async()])


# -- the example: plugins/github_webhook.py -------------------------------------------------

PUSH = {"ref": "refs/heads/main", "commits": [{}, {}], "repository": {"full_name": "acme/rocket"},
        "sender": {"login": "alice"}}


def _deliver(server, payload: dict[str, Any], secret: str | None, event: str = "push"):
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event}
    if secret is not None:
        headers["X-Hub-Signature-256"] = github_webhook.signature(secret, body)
    return http(f"{server.url}/hooks/github", body, headers)


def test_github_webhook_posts_a_signed_delivery_into_the_channel(serve, monkeypatch):
    monkeypatch.setenv("QUART_CHAT_PLUGIN_GITHUB_WEBHOOK_SECRET", "s3cret")
    server = serve(github_webhook)
    watcher = server.connect("watcher")
    watcher.subscribe("github")
    status, answer = _deliver(server, PUSH, "s3cret")
    message = watcher.receive(WAIT)
    assert status == 200 and answer["mid"] == message.mid
    assert (message.sender, message.text) == (
        "github", "alice pushed 2 commits to main of acme/rocket")
    pull = {"action": "opened", "pull_request": {"number": 7, "title": "Faster"},
            "repository": {"full_name": "acme/rocket"}, "sender": {"login": "bob"}}
    _deliver(server, pull, "s3cret", event="pull_request")
    assert watcher.receive(WAIT).text == "bob opened PR #7 in acme/rocket: Faster"


@pytest.mark.parametrize("secret", [None, "wrong"])
def test_github_webhook_refuses_a_missing_or_wrong_signature(serve, monkeypatch, secret):
    monkeypatch.setenv("QUART_CHAT_PLUGIN_GITHUB_WEBHOOK_SECRET", "s3cret")
    server = serve(github_webhook)
    watcher = server.connect("watcher")
    watcher.subscribe("github")
    assert _deliver(server, PUSH, secret)[0] == 401
    _deliver(server, {"repository": {"full_name": "acme/rocket"}}, "s3cret", event="ping")
    assert watcher.receive(WAIT).text == "webhook connected for acme/rocket"  # only


def test_github_webhook_without_a_secret_refuses_everything(serve, monkeypatch):
    monkeypatch.delenv("QUART_CHAT_PLUGIN_GITHUB_WEBHOOK_SECRET", raising=False)
    server = serve(github_webhook)
    assert _deliver(server, PUSH, "")[0] == 503
