"""call: a client runs a plugin function and gets its answer (or a clear error)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from quart_chat import ChatClient, Forbidden, Rejected, hookimpl

from ..wsclient import Client
from .kit import WAIT, Recorder, refusal


class Functions:
    """``echo``, ``add``, ``refuse``, ``forbid``, ``crash``, ``sleep`` and ``blocked``."""

    def __init__(self) -> None:
        self.seen = Recorder()
        self.release = threading.Event()

    @hookimpl
    async def call(self, session, method, params):
        self.seen.add("call", (session.client_id, method, params))
        if method == "echo":
            return params
        if method == "add":
            return params["a"] + params["b"]
        if method == "refuse":
            raise Rejected("not on a Sunday")
        if method == "forbid":
            raise Forbidden("staff only")
        if method == "crash":
            raise KeyError("boom")
        if method == "sleep":
            await asyncio.sleep(params["seconds"])
            return "slept"
        if method == "blocked":
            # released from the test thread, so no asyncio.Event; bounded by hook_timeout
            while not self.release.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return "released"
        return None


def test_hook_call_answers_with_the_first_non_none_result(chat_server):
    """The function's value comes back as ``data`` in a result carrying the call's id
    (on the wire), and as the return value of ``ChatClient.call``."""
    server = chat_server(Functions())
    assert server.connect("alice").call("add", {"a": 2, "b": 3}) == 5
    raw = Client(server.ws_url, "bob")
    try:
        raw.send({"type": "call", "id": "echo-1", "method": "echo", "params": {"x": [1, "y"]}})
        assert raw.reply("echo-1") == {"type": "result", "id": "echo-1", "ok": True,
                                       "data": {"x": [1, "y"]}}
    finally:
        raw.close()


def test_hook_call_params_default_to_an_empty_object(chat_server):
    """A call without params runs the function with ``{}``; null counts as absent."""
    plugin = Functions()
    server = chat_server(plugin)
    alice = server.connect("alice")
    assert alice.call("echo") == {}
    assert alice.request("call", method="echo", params=None)["data"] == {}
    assert plugin.seen.of("call") == [("alice", "echo", {}), ("alice", "echo", {})]


def test_hook_call_first_plugin_in_call_order_wins(chat_server):
    """Two plugins answering the same method: the one pluggy calls first (registered
    last) answers; a plugin returning None defers to the next."""

    class Other:
        @hookimpl
        def call(self, method):
            return "other" if method in ("add", "mine") else None

    server = chat_server(Functions(), Other())
    alice = server.connect("alice")
    assert alice.call("add", {"a": 1, "b": 1}) == "other"
    assert alice.call("echo", {"k": 1}) == {"k": 1}
    assert alice.call("mine") == "other"


def test_hook_call_unknown_method_when_every_plugin_returns_none(chat_server):
    """No plugin answers: error ``unknown_method``; also with no call plugin at all."""
    server = chat_server(Functions())
    alice = server.connect("alice")
    error = refusal(alice.call, "nope")
    assert error.code == "unknown_method" and "nope" in error.message
    bare = chat_server().connect("bob")
    assert refusal(bare.call, "echo").code == "unknown_method"


def test_hook_call_rejected_and_forbidden_carry_the_plugins_reason(chat_server):
    """Rejected -> ``rejected``, Forbidden -> ``forbidden``, each with the message."""
    server = chat_server(Functions())
    alice = server.connect("alice")
    refused = refusal(alice.call, "refuse")
    assert (type(refused), refused.code, refused.message) == (
        Rejected, "rejected", "not on a Sunday")
    forbidden = refusal(alice.call, "forbid")
    assert (type(forbidden), forbidden.code, forbidden.message) == (
        Forbidden, "forbidden", "staff only")


def test_hook_call_that_raises_answers_internal_and_is_logged(chat_server, caplog):
    """A crashing function is ``internal`` for the caller, logged with the plugin name;
    the session goes on."""
    server = chat_server(Functions())
    alice = server.connect("alice")
    assert refusal(alice.call, "crash").code == "internal"
    assert "hook call raised" in caplog.text
    assert alice.call("add", {"a": 1, "b": 2}) == 3


def test_hook_call_that_times_out_answers_internal(chat_server, caplog):
    """A function running past hook_timeout is abandoned: ``internal``, logged."""
    server = chat_server(Functions(), hook_timeout=0.3)
    alice = server.connect("alice")
    started = time.monotonic()
    assert refusal(alice.call, "sleep", {"seconds": 5}).code == "internal"
    assert time.monotonic() - started < 3
    assert "hook call timed out" in caplog.text


def test_hook_call_answer_that_is_not_json_is_internal(chat_server, caplog):
    """A value JSON cannot carry is refused with ``internal`` and a clear log line."""

    class Odd:
        @hookimpl
        def call(self):
            return object()

    alice = chat_server(Odd()).connect("alice")
    assert refusal(alice.call, "odd").code == "internal"
    assert "plugin Odd" in caplog.text and "expected a value JSON can carry" in caplog.text


def test_hook_call_slow_function_does_not_block_the_callers_other_frames(chat_server):
    """While one call is running, a ping on the same socket and another client's call
    are answered; the slow call's result comes later with its own id."""
    plugin = Functions()
    server = chat_server(plugin, hook_timeout=20)
    alice, bob = server.connect("alice", timeout=WAIT), server.connect("bob")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(alice.call, "blocked")
        plugin.seen.wait("call")
        started = time.monotonic()
        alice.ping()
        assert alice.call("echo", {"n": 1}) == {"n": 1}  # answered before the slow one
        assert bob.call("echo", {"n": 2}) == {"n": 2}
        assert time.monotonic() - started < 2
        assert not slow.done()
        plugin.release.set()
        assert slow.result(WAIT) == "released"


def test_hook_call_in_flight_calls_per_session_are_bounded(chat_server):
    """Past MAX_CALLS_IN_FLIGHT running calls, one more is ``rate_limited``; once they
    end, calls work again."""
    from quart_chat.session import MAX_CALLS_IN_FLIGHT

    plugin = Functions()
    server = chat_server(plugin, hook_timeout=20)
    alice = server.connect("alice", timeout=WAIT)
    with ThreadPoolExecutor(MAX_CALLS_IN_FLIGHT) as pool:
        running = [pool.submit(alice.call, "blocked") for _ in range(MAX_CALLS_IN_FLIGHT)]
        plugin.seen.wait("call", MAX_CALLS_IN_FLIGHT)
        assert refusal(alice.call, "echo").code == "rate_limited"
        plugin.release.set()
        assert [call.result(WAIT) for call in running] == ["released"] * MAX_CALLS_IN_FLIGHT
    assert alice.call("echo") == {}


@pytest.mark.parametrize(("frame", "code"), [
    ({"type": "call", "id": 1}, "bad_frame"),  # no method
    ({"type": "call", "id": 1, "method": "has space"}, "bad_frame"),
    ({"type": "call", "id": 1, "method": ""}, "bad_frame"),
    ({"type": "call", "id": 1, "method": "echo", "params": [1, 2]}, "bad_frame"),
    ({"type": "call", "id": 1, "method": 7}, "bad_frame"),
])
def test_hook_call_malformed_frames_are_bad_frame(chat_server, frame, code):
    """A call without a valid method name, or with params that are not an object."""
    alice = Client(chat_server(Functions()).ws_url, "alice")
    try:
        alice.send(frame)
        error = alice.reply(1)
        assert (error["type"], error["code"]) == ("error", code)
    finally:
        alice.close()


def test_hook_call_counts_against_the_frame_rate(chat_server):
    """Calls are frames: past frame_rate (and its burst), ``rate_limited``."""
    server = chat_server(Functions(), frame_rate=5, max_bad_frames=1000)
    alice = Client(server.ws_url, "alice")
    try:
        for n in range(40):
            alice.send({"type": "call", "id": n, "method": "echo"})
        answers = [alice.recv() for _ in range(40)]  # one each; rate_limited ones have no id
    finally:
        alice.close()
    codes = [frame.get("code") for frame in answers]
    assert "rate_limited" in codes and codes.count(None) >= 5


def test_hook_call_gets_a_bot_that_publishes_as_the_plugin(chat_server):
    """``bot`` in call publishes as the plugin, e.g. announcing what a client asked."""

    class Announcer:
        BOT_NAME = "herald"

        @hookimpl
        async def call(self, session, method, params, bot):
            if method != "announce":
                return None
            message = await bot.publish(params["channel"], f"{session.client_id} asks")
            return message.mid

    server = chat_server(Announcer())
    alice = server.connect("alice")
    alice.subscribe("news")
    mid = alice.call("announce", {"channel": "news"})
    message = alice.receive(timeout=WAIT)
    assert (message.sender, message.text, message.mid, message.bot) == (
        "herald", "alice asks", mid, True)


@pytest.mark.redis
def test_hook_call_with_two_processes_on_redis(processes):
    """Each process answers its own clients' calls (``roll`` from the command bot)."""
    env = {"QUART_CHAT_PLUGINS": "command_bot"}
    first, second = processes(env), processes(env)
    clients = [ChatClient(first.ws_url, "alice"), ChatClient(second.ws_url, "bob")]
    try:
        for client in clients:
            data = client.call("roll", {"dice": "3d6"})
            assert len(data["rolls"]) == 3 and data["total"] == sum(data["rolls"])
            assert refusal(client.call, "nope").code == "unknown_method"
    finally:
        for client in clients:
            client.close()
