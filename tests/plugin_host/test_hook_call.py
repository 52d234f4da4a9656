"""call: a client runs a plugin function and gets its answer (or a clear error)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from quart_chat import Forbidden, Rejected, hookimpl

from .kit import Recorder


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
    """The function's value comes back as ``data`` in a result carrying the call's id."""
    server = chat_server(Functions())
    alice = server.connect("alice")
    reply = alice.request("call", method="add", params={"a": 2, "b": 3})
    assert reply == {"type": "result", "id": reply["id"], "ok": True, "data": 5}
    alice.send({"type": "call", "id": "echo-1", "method": "echo", "params": {"x": [1, "y"]}})
    assert alice.reply("echo-1") == {"type": "result", "id": "echo-1", "ok": True,
                                     "data": {"x": [1, "y"]}}


def test_hook_call_params_default_to_an_empty_object(chat_server):
    """A call without params runs the function with ``{}``; null counts as absent."""
    plugin = Functions()
    server = chat_server(plugin)
    alice = server.connect("alice")
    assert alice.ok("call", method="echo")["data"] == {}
    assert alice.ok("call", method="echo", params=None)["data"] == {}
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
    assert alice.ok("call", method="add", params={"a": 1, "b": 1})["data"] == "other"
    assert alice.ok("call", method="echo", params={"k": 1})["data"] == {"k": 1}
    assert alice.ok("call", method="mine")["data"] == "other"


def test_hook_call_unknown_method_when_every_plugin_returns_none(chat_server):
    """No plugin answers: error ``unknown_method``; also with no call plugin at all."""
    server = chat_server(Functions())
    alice = server.connect("alice")
    error = alice.error("call", method="nope")
    assert error["code"] == "unknown_method" and "nope" in error["message"]
    bare = chat_server().connect("bob")
    assert bare.error("call", method="echo")["code"] == "unknown_method"


def test_hook_call_rejected_and_forbidden_carry_the_plugins_reason(chat_server):
    """Rejected -> ``rejected``, Forbidden -> ``forbidden``, each with the message."""
    server = chat_server(Functions())
    alice = server.connect("alice")
    refused = alice.error("call", method="refuse")
    assert (refused["code"], refused["message"]) == ("rejected", "not on a Sunday")
    forbidden = alice.error("call", method="forbid")
    assert (forbidden["code"], forbidden["message"]) == ("forbidden", "staff only")


def test_hook_call_that_raises_answers_internal_and_is_logged(chat_server, caplog):
    """A crashing function is ``internal`` for the caller, logged with the plugin name;
    the session goes on."""
    server = chat_server(Functions())
    alice = server.connect("alice")
    assert alice.error("call", method="crash")["code"] == "internal"
    assert "hook call raised" in caplog.text
    assert alice.ok("call", method="add", params={"a": 1, "b": 2})["data"] == 3


def test_hook_call_that_times_out_answers_internal(chat_server, caplog):
    """A function running past hook_timeout is abandoned: ``internal``, logged."""
    server = chat_server(Functions(), hook_timeout=0.3)
    alice = server.connect("alice")
    started = time.monotonic()
    assert alice.error("call", method="sleep", params={"seconds": 5})["code"] == "internal"
    assert time.monotonic() - started < 3
    assert "hook call timed out" in caplog.text


def test_hook_call_answer_that_is_not_json_is_internal(chat_server, caplog):
    """A value JSON cannot carry is refused with ``internal`` and a clear log line."""

    class Odd:
        @hookimpl
        def call(self):
            return object()

    alice = chat_server(Odd()).connect("alice")
    assert alice.error("call", method="odd")["code"] == "internal"
    assert "answered a value JSON cannot carry" in caplog.text


def test_hook_call_slow_function_does_not_block_the_callers_other_frames(chat_server):
    """While one call is running, a ping on the same socket and another client's call
    are answered; the slow call's result comes later with its own id."""
    plugin = Functions()
    server = chat_server(plugin, hook_timeout=20)
    alice, bob = server.connect("alice"), server.connect("bob")
    alice.send({"type": "call", "id": "slow", "method": "blocked"})
    plugin.seen.wait("call")
    started = time.monotonic()
    assert alice.request("ping")["type"] == "result"
    assert bob.ok("call", method="echo", params={"n": 1})["data"] == {"n": 1}
    assert time.monotonic() - started < 2
    plugin.release.set()
    assert alice.reply("slow") == {"type": "result", "id": "slow", "ok": True,
                                   "data": "released"}


def test_hook_call_in_flight_calls_per_session_are_bounded(chat_server):
    """Past MAX_CALLS_IN_FLIGHT running calls, one more is ``rate_limited``; once they
    end, calls work again."""
    from quart_chat.session import MAX_CALLS_IN_FLIGHT

    plugin = Functions()
    server = chat_server(plugin, hook_timeout=20)
    alice = server.connect("alice")
    for n in range(MAX_CALLS_IN_FLIGHT):
        alice.send({"type": "call", "id": n, "method": "blocked"})
    plugin.seen.wait("call", MAX_CALLS_IN_FLIGHT)
    assert alice.error("call", method="echo")["code"] == "rate_limited"
    plugin.release.set()
    assert [alice.reply(n)["data"] for n in range(MAX_CALLS_IN_FLIGHT)] == (
        ["released"] * MAX_CALLS_IN_FLIGHT)
    assert alice.ok("call", method="echo")["data"] == {}


@pytest.mark.parametrize(("frame", "code"), [
    ({"type": "call", "id": 1}, "bad_frame"),  # no method
    ({"type": "call", "id": 1, "method": "has space"}, "bad_frame"),
    ({"type": "call", "id": 1, "method": ""}, "bad_frame"),
    ({"type": "call", "id": 1, "method": "echo", "params": [1, 2]}, "bad_frame"),
    ({"type": "call", "id": 1, "method": 7}, "bad_frame"),
])
def test_hook_call_malformed_frames_are_bad_frame(chat_server, frame, code):
    """A call without a valid method name, or with params that are not an object."""
    alice = chat_server(Functions()).connect("alice")
    alice.send(frame)
    error = alice.reply(1)
    assert (error["type"], error["code"]) == ("error", code)


def test_hook_call_counts_against_the_frame_rate(chat_server):
    """Calls are frames: past frame_rate (and its burst), ``rate_limited``."""
    alice = chat_server(Functions(), frame_rate=5, max_bad_frames=1000).connect("alice")
    for n in range(40):
        alice.send({"type": "call", "id": n, "method": "echo"})
    answers = [alice.recv() for _ in range(40)]  # one each; rate_limited ones have no id
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
    alice.ok("subscribe", channel="news")
    mid = alice.ok("call", method="announce", params={"channel": "news"})["data"]
    message = alice.next_message()
    assert (message["sender"], message["text"], message["mid"], message["bot"]) == (
        "herald", "alice asks", mid, True)


@pytest.mark.redis
def test_hook_call_with_two_processes_on_redis(processes):
    """Each process answers its own clients' calls (``roll`` from the command bot)."""
    from quart_chat.pytest_plugin import ChatClient

    env = {"QUART_CHAT_PLUGINS": "command_bot"}
    first, second = processes(env), processes(env)
    clients = [ChatClient(first.ws_url, "alice"), ChatClient(second.ws_url, "bob")]
    try:
        for client in clients:
            data = client.ok("call", method="roll", params={"dice": "3d6"})["data"]
            assert len(data["rolls"]) == 3 and data["total"] == sum(data["rolls"])
            assert client.error("call", method="nope")["code"] == "unknown_method"
    finally:
        for client in clients:
            client.close()
