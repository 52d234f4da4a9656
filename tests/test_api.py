"""The server HTTP API: every method, its key, its input checks, across processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from quart_chat import hookimpl
from quart_chat.cli import main
from quart_chat.config import Settings
from quart_chat.errors import ChatError, InvalidChannel, TooLarge
from quart_chat.protocol import CLOSE_DISCONNECTED
from quart_chat.server_api import ServerAPI
from quart_chat.testing import ServerProcess, ServerThread

from .helpers import http_json, wait_until
from .wsclient import Client, close_code

KEY = "test-api-key-0123456789"

#: Each method with arguments that succeed on an empty server.
GOOD_BODIES: dict[str, dict[str, Any]] = {
    "publish": {"channel": "lobby", "text": "hello"},
    "broadcast": {"channels": ["lobby", "news"], "text": "hello"},
    "presence": {"channel": "lobby"},
    "channels": {},
    "history": {"channel": "lobby"},
    "disconnect": {"client_id": "nobody"},
    "subscribe": {"client_id": "nobody", "channel": "lobby"},
    "unsubscribe": {"client_id": "nobody", "channel": "lobby"},
    "info": {},
}
#: The methods that name one channel, and where.
CHANNEL_FIELDS = {"publish": "channel", "presence": "channel", "history": "channel",
                  "subscribe": "channel", "unsubscribe": "channel"}


def post(url: str, method: str, body: bytes | dict[str, Any] | None,
         key: str | None = KEY, http_method: str = "POST") -> tuple[int, dict[str, Any]]:
    """One raw API request: (HTTP status, decoded JSON answer)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    return http_json(f"{url}/api/{method}", data, headers, http_method)


class History:
    """A test plugin: keeps every published message, serves ``history``, logs filters."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.filtered: list[Any] = []

    @hookimpl
    def filter_message(self, message: Any, session: Any) -> None:
        self.filtered.append((message.text, session))

    @hookimpl
    def message_published(self, message: Any) -> None:
        self.messages.append(message)

    @hookimpl
    def history(self, channel: str, limit: int, before: str | None) -> list[Any]:
        return [m for m in reversed(self.messages) if m.channel == channel][:limit]


@pytest.fixture(scope="module")
def memory_server() -> Iterator[ServerThread]:
    """One embedded-broker server with the API on (and history kept), shared by the
    input-check tests."""
    with ServerThread(Settings(api_key=KEY), plugins=[History()]) as server:
        yield server


@pytest.fixture
def api_server(make_server: Any) -> Any:
    """``api_server(*plugins)``: a server over the test's broker with the API on."""
    return lambda *plugins: make_server(plugins=plugins, api_key=KEY)


# -- the key and the input checks ------------------------------------------------------


@pytest.mark.parametrize("method", sorted(GOOD_BODIES))
def test_api_method_answers_ok_with_a_good_key(memory_server, method):
    status, answer = post(memory_server.url, method, GOOD_BODIES[method])
    assert status == 200 and answer["ok"] is True, answer


@pytest.mark.parametrize("method", sorted(GOOD_BODIES))
def test_api_method_refuses_a_wrong_key_with_401(memory_server, method):
    status, answer = post(memory_server.url, method, GOOD_BODIES[method], key=KEY + "x")
    assert (status, answer["ok"], answer["code"]) == (401, False, "forbidden")
    assert KEY not in json.dumps(answer)


@pytest.mark.parametrize("method", sorted(GOOD_BODIES))
def test_api_method_refuses_a_missing_key_with_401(memory_server, method):
    status, answer = post(memory_server.url, method, GOOD_BODIES[method], key=None)
    assert (status, answer["code"]) == (401, "forbidden")
    assert "X-API-Key" in answer["message"]


@pytest.mark.parametrize("method", sorted(GOOD_BODIES))
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
def test_api_method_refuses_a_body_that_is_not_a_json_object_with_400(memory_server, method,
                                                                       body):
    status, answer = post(memory_server.url, method, body)
    assert (status, answer["code"]) == (400, "bad_frame"), answer


@pytest.mark.parametrize("method", sorted(CHANNEL_FIELDS))
def test_api_method_refuses_a_bad_channel_with_400(memory_server, method):
    body = {**GOOD_BODIES[method], CHANNEL_FIELDS[method]: "no spaces allowed"}
    status, answer = post(memory_server.url, method, body)
    assert (status, answer["code"]) == (400, "invalid_channel"), answer


def test_api_broadcast_refuses_a_bad_channel_among_good_ones_and_publishes_nothing(
        memory_server):
    status, answer = post(memory_server.url, "broadcast",
                          {"channels": ["fine", "#bad"], "text": "x"})
    assert (status, answer["code"]) == (400, "invalid_channel")


@pytest.mark.parametrize(("method", "body", "words"), [
    ("publish", {"channel": "lobby"}, "text"),
    ("publish", {"channel": "lobby", "text": 5}, "str"),
    ("publish", {"channel": "lobby", "text": "x", "sendr": "typo"}, "sendr"),
    ("publish", {"channel": "lobby", "text": "x", "sender": "no spaces"}, "sender"),
    ("broadcast", {"channels": [], "text": "x"}, "channels"),
    ("broadcast", {"channels": ["a", "a"], "text": "x"}, "twice"),
    ("history", {"channel": "lobby", "limit": 0}, "limit"),
    ("disconnect", {}, "client_id"),
    ("subscribe", {"client_id": "bad id!", "channel": "lobby"}, "client_id"),
])
def test_api_bad_input_is_a_400_that_names_the_problem(memory_server, method, body, words):
    status, answer = post(memory_server.url, method, body)
    assert (status, answer["ok"], answer["code"]) == (400, False, "bad_frame"), answer
    assert words in answer["message"]


def test_api_text_longer_than_the_limit_is_too_large(memory_server):
    status, answer = post(memory_server.url, "publish", {"channel": "a", "text": "x" * 4001})
    assert (status, answer["code"]) == (413, "too_large")


def test_api_unknown_method_is_a_404_even_before_the_body_is_read(memory_server):
    status, answer = post(memory_server.url, "explode", b"{not json")
    assert (status, answer["code"]) == (404, "unknown_method")
    assert "publish" in answer["message"]


def test_api_other_http_methods_are_a_json_400(memory_server):
    status, answer = post(memory_server.url, "info", None, http_method="GET")
    assert (status, answer["code"]) == (400, "bad_frame")


def test_api_is_off_without_a_key_and_says_so_for_every_call():
    with ServerThread(Settings()) as server:
        for method in [*GOOD_BODIES, "unknown"]:
            status, answer = post(server.url, method, GOOD_BODIES.get(method, {}))
            assert (status, answer["code"]) == (403, "forbidden")
            assert "QUART_CHAT_API_KEY" in answer["message"]


def test_api_key_is_not_in_the_settings_repr():
    assert KEY not in repr(Settings(api_key=KEY))


# -- what each method does (memory, Redis, Redis Cluster) ------------------------------


def test_api_publish_reaches_subscribers_through_filters_and_persistence(api_server, opened):
    plugin = History()
    server = api_server(plugin)
    alice = opened(server, "alice")
    alice.ok("subscribe", channel="lobby")
    api = ServerAPI(server.url, KEY)
    mid = api.publish("lobby", "deploy finished", sender="ci")
    message = alice.next()
    assert (message["sender"], message["text"], message["mid"]) == ("ci", "deploy finished", mid)
    assert api.publish("lobby", "second") != mid
    assert alice.next()["sender"] == "api"  # the default sender
    assert plugin.filtered[0] == ("deploy finished", None)  # as for bots: no session
    assert [m["text"] for m in api.history("lobby")] == ["second", "deploy finished"]
    assert [m["mid"] for m in alice.ok("history", channel="lobby")["messages"]][1] == mid


def test_api_broadcast_publishes_once_per_channel_in_order(api_server, opened):
    server = api_server()
    alice, bob = opened(server, "alice"), opened(server, "bob")
    alice.ok("subscribe", channel="a")
    bob.ok("subscribe", channel="b")
    mids = ServerAPI(server.url, KEY).broadcast(["a", "b", "c"], "maintenance at noon")
    assert len(set(mids)) == 3
    assert alice.next()["mid"] == mids[0]
    assert bob.next()["mid"] == mids[1]


def test_api_presence_channels_and_info_see_the_sessions(api_server, opened):
    server = api_server()
    api = ServerAPI(server.url, KEY)
    for name, channel in [("alice", "lobby"), ("bob", "lobby"), ("carol", "games")]:
        opened(server, name).ok("subscribe", channel=channel)
    assert api.presence("lobby") == ["alice", "bob"]
    assert api.channels() == ["games", "lobby"]
    (node,) = api.info()
    assert (node["sessions"], node["clients"], node["channels"]) == (3, 3, 2)
    assert node["node"] == server.service.node_id


def test_api_subscribe_and_unsubscribe_act_on_every_session_of_the_client(api_server, opened):
    server = api_server()
    api = ServerAPI(server.url, KEY)
    first, second, other = opened(server, "alice"), opened(server, "alice"), opened(server, "bob")
    assert api.subscribe("alice", "news") == 2
    assert api.subscribe("alice", "news") == 0  # already in: nothing to do
    assert first.ok("channels")["channels"] == ["news"]
    assert other.ok("channels")["channels"] == []
    api.publish("news", "extra!")
    assert first.next()["text"] == second.next()["text"] == "extra!"
    assert api.presence("news") == ["alice"]
    assert api.unsubscribe("alice", "news") == 2
    assert first.next("unsubscribed")["channel"] == second.next("unsubscribed")["channel"] == "news"
    assert second.ok("channels")["channels"] == []
    assert api.presence("news") == []


def test_api_disconnect_closes_every_session_of_the_client_with_4002(api_server, opened):
    server = api_server()
    sessions = [opened(server, "mallory") for _ in range(2)]
    bob = opened(server, "bob")
    assert ServerAPI(server.url, KEY).disconnect("mallory") == 2
    assert [close_code(s.ws) for s in sessions] == [CLOSE_DISCONNECTED] * 2
    assert bob.ok("ping")
    assert ServerAPI(server.url, KEY).disconnect("mallory") == 0


def test_api_client_raises_the_error_class_of_the_code(memory_server):
    api = ServerAPI(memory_server.url, KEY)
    with pytest.raises(InvalidChannel):
        api.publish("bad channel", "x")
    with pytest.raises(TooLarge):
        api.publish("lobby", "x" * 5000)
    with pytest.raises(ChatError) as caught:
        ServerAPI(memory_server.url, "wrong").info()
    assert caught.value.code == "forbidden"
    assert "wrong" not in repr(ServerAPI(memory_server.url, "wrong"))


def test_cli_publish_posts_through_the_api_and_prints_the_mid(memory_server):
    alice = Client(memory_server.ws_url, "alice")
    try:
        alice.ok("subscribe", channel="ops")
        result = CliRunner().invoke(main, ["publish", "ops", "backup done", "--url",
                                           memory_server.url, "--sender", "cron"],
                                    env={"QUART_CHAT_API_KEY": KEY})
        assert result.exit_code == 0, result.output
        message = alice.next()
        assert (message["sender"], message["mid"]) == ("cron", result.output.strip())
    finally:
        alice.close()
    refused = CliRunner().invoke(main, ["publish", "ops", "x", "--url", memory_server.url,
                                        "--api-key", "wrong"])
    assert refused.exit_code == 1 and "forbidden" in refused.output


# -- across processes: two `quart-chat serve` on one Redis ----------------------------


@pytest.fixture(params=["redis_url", "cluster_url"])
def two_processes(request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two processes on one Redis, or on one Redis Cluster (where the control channels
    are classic pub/sub on one shard, and PUBLISH must still count both processes)."""
    url = request.getfixturevalue(request.param)
    env = {"QUART_CHAT_REDIS_URL": url, "QUART_CHAT_API_KEY": KEY,
           "QUART_CHAT_REDIS_PROBE_INTERVAL": "0.2"}
    with ServerProcess(env) as first, ServerProcess(env) as second:
        yield first, second


@pytest.mark.redis
def test_api_acts_on_every_process_sharing_one_backend(two_processes):
    first, second = two_processes
    api = ServerAPI(first.url, KEY)  # every call goes to the first process
    here, there = Client(first.ws_url, "alice"), Client(second.ws_url, "alice")
    bob = Client(second.ws_url, "bob")
    try:
        bob.ok("subscribe", channel="only-on-second")
        assert api.channels() == ["only-on-second"]
        nodes = api.info()
        assert len(nodes) == 2 and sorted(n["sessions"] for n in nodes) == [1, 2]
        assert len({n["pid"] for n in nodes}) == 2

        assert api.subscribe("alice", "news") == 2
        assert there.ok("channels")["channels"] == ["news"]
        assert api.channels() == ["news", "only-on-second"]
        ServerAPI(second.url, KEY).publish("news", "both processes")
        assert here.next()["text"] == there.next()["text"] == "both processes"
        assert api.presence("news") == ["alice"]

        assert api.unsubscribe("alice", "news") == 2
        assert here.ok("channels")["channels"] == there.ok("channels")["channels"] == []
        assert api.channels() == ["only-on-second"]

        assert api.disconnect("alice") == 2
        assert close_code(here.ws) == close_code(there.ws) == CLOSE_DISCONNECTED
        wait_until(lambda: sorted(n["sessions"] for n in api.info()) == [0, 1], 10,
                   "alice's sessions gone from info")
        assert bob.ok("ping")
    finally:
        for client in (here, there, bob):
            client.close()
