"""quart_chat.client against real servers over real sockets (both brokers where it matters)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quart_chat import Forbidden, Rejected, hookimpl
from quart_chat.client import (
    ChatClient,
    ClientClosed,
    ConnectFailed,
    Disconnected,
    NotConnected,
    Reconnected,
    RequestTimeout,
    ws_url,
)
from quart_chat.config import Settings
from quart_chat.errors import ChatError
from quart_chat.protocol import Message
from quart_chat.testing import RedisServer, ServerProcess, ServerThread, free_port

from .helpers import wait_until

WAIT = 10.0  # upper bound for anything that should happen promptly (never asserted on)

OpenClient = Callable[..., ChatClient]


@pytest.fixture
def chat(server: ServerThread) -> Iterator[OpenClient]:
    """``chat("alice")``: a ChatClient on the test server; all are closed afterwards."""
    clients: list[ChatClient] = []

    def open_client(client_id: str, **options: Any) -> ChatClient:
        client = ChatClient(server.ws_url, client_id, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def serve(settings: Settings | None = None, *plugins: object, port: int | None = None
          ) -> ServerThread:
    """A server to start (``with serve(...) as server`` or ``serve(...).start()``)."""
    return ServerThread(settings or Settings(), plugins=plugins, port=port)


class History:
    """A tiny in-memory history plugin, so the client's ``history`` has something to read."""

    def __init__(self) -> None:
        self.kept: list[Message] = []

    @hookimpl
    def message_published(self, message: Message) -> None:
        self.kept.append(message)

    @hookimpl
    def history(self, channel: str, limit: int, before: str | None) -> list[Message]:
        kept = [m for m in self.kept if m.channel == channel]
        mids = [m.mid for m in kept]
        if before is not None:
            kept = kept[: mids.index(before)] if before in mids else []
        return kept[::-1][:limit]


# -- every operation --------------------------------------------------------------------


def test_connect_reads_the_welcome(chat: OpenClient) -> None:
    """A new client knows its id and session from the welcome frame and opted into batching."""
    alice = chat("alice")
    assert alice.client_id == "alice"
    assert alice.session_id
    assert alice.welcome["batch"] is True
    assert alice.state == "connected" and alice.connected


def test_publish_reaches_every_subscriber_as_a_message(chat: OpenClient) -> None:
    """receive() returns Message values; the sender gets its own message; mids match."""
    alice, bob = chat("alice"), chat("bob")
    alice.subscribe("lobby")
    bob.subscribe("lobby")
    mid = alice.publish("lobby", "hi bob")
    for client in (alice, bob):
        message = client.receive(WAIT)
        assert isinstance(message, Message)
        assert (message.channel, message.sender, message.text, message.mid, message.bot) == (
            "lobby", "alice", "hi bob", mid, False)


def test_channels_and_unsubscribe_track_membership(chat: OpenClient) -> None:
    """channels() lists joined channels; unsubscribe returns those left, all when omitted."""
    alice = chat("alice")
    for channel in ("b", "a", "c"):
        alice.subscribe(channel)
    assert alice.channels() == ["a", "b", "c"]
    assert alice.unsubscribe("b") == ["a", "c"]
    assert alice.subscriptions == ["a", "c"]
    assert alice.unsubscribe() == []
    assert alice.channels() == [] and alice.subscriptions == []


def test_presence_lists_the_subscribers(chat: OpenClient) -> None:
    alice, bob, carol = chat("alice"), chat("bob"), chat("carol")
    alice.subscribe("lobby")
    bob.subscribe("lobby")
    carol.subscribe("elsewhere")
    assert sorted(carol.presence("lobby")) == ["alice", "bob"]


def test_ping_returns_a_round_trip_time(chat: OpenClient) -> None:
    rtt = chat("alice").ping()
    assert isinstance(rtt, float) and rtt > 0


def test_history_returns_messages_newest_first_and_pages() -> None:
    """history() decodes the server's list into Message values; ``before`` pages back."""
    with serve(None, History()) as server, ChatClient(server.ws_url, "alice") as alice:
        alice.subscribe("lobby")
        mids = [alice.publish("lobby", f"m{n}") for n in range(5)]
        newest = alice.history("lobby", limit=3)
        assert [m.text for m in newest] == ["m4", "m3", "m2"]
        assert all(isinstance(m, Message) for m in newest)
        older = alice.history("lobby", limit=10, before=mids[2])
        assert [m.text for m in older] == ["m1", "m0"]


def test_requests_are_matched_by_id_across_threads(chat: OpenClient) -> None:
    """Many threads share one client; each gets its own reply, not a neighbour's."""
    alice = chat("alice")
    names = [f"ch{n}" for n in range(8)]
    errors: list[BaseException] = []

    def work(channel: str) -> None:
        try:
            alice.subscribe(channel)
            assert alice.presence(channel) == ["alice"]
            assert alice.publish(channel, channel)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert alice.channels() == sorted(names)
    assert sorted(alice.receive(WAIT).text for _ in names) == sorted(names)


@pytest.mark.parametrize("batch", [True, False])
def test_a_burst_arrives_complete_and_in_order(batch: bool, chat: OpenClient) -> None:
    """With or without coalesced frames, every message of a burst arrives, in order."""
    alice = chat("alice", batch=batch)
    assert alice.welcome["batch"] is batch
    alice.subscribe("lobby")
    for n in range(30):
        alice.publish("lobby", str(n))
    assert [alice.receive(WAIT).text for _ in range(30)] == [str(n) for n in range(30)]


# -- errors ---------------------------------------------------------------------------------


class Policy:
    """authorize, filter and a broken hook, to provoke forbidden/rejected/internal."""

    @hookimpl
    def authorize(self, action: str, channel: str) -> bool:
        return channel != "secret"

    @hookimpl
    def filter_message(self, message: Message) -> Message | None:
        if message.text == "boom":
            raise RuntimeError("a plugin bug")
        if "spam" in message.text:
            raise Rejected("no spam here")
        return None


ERROR_CASES: dict[str, Callable[[ChatClient], object]] = {
    "invalid_channel": lambda c: c.subscribe("no spaces"),
    "already_subscribed": lambda c: c.subscribe("lobby"),
    "not_subscribed": lambda c: c.publish("elsewhere", "hi"),
    "too_large": lambda c: c.publish("lobby", "x" * 101),
    "forbidden": lambda c: c.subscribe("secret"),
    "rejected": lambda c: c.publish("lobby", "buy spam"),
    "internal": lambda c: c.publish("lobby", "boom"),
    "history_unavailable": lambda c: c.history("lobby"),
    "bad_frame": lambda c: c.history("lobby", limit=0),
    "unknown_type": lambda c: c.request("shout"),
}


@pytest.fixture
def strict_server() -> Iterator[ServerThread]:
    settings = Settings(max_text_length=100, log_level="critical")
    with serve(settings, Policy()) as server:
        yield server


@pytest.mark.parametrize("code", sorted(ERROR_CASES))
def test_server_errors_raise_chat_error_with_code(code: str, strict_server: ServerThread
                                                  ) -> None:
    """Each server error code surfaces as the matching ChatError subclass; the client lives on."""
    with ChatClient(strict_server.ws_url, "alice") as alice:
        alice.subscribe("lobby")
        with pytest.raises(ChatError) as caught:
            ERROR_CASES[code](alice)
        assert caught.value.code == code
        assert type(caught.value) is type(ChatError.from_code(code, ""))
        assert caught.value.message
        assert alice.publish("lobby", "still here")


def test_unsubscribe_from_a_channel_not_joined_is_not_subscribed(chat: OpenClient) -> None:
    with pytest.raises(ChatError) as caught:
        chat("alice").unsubscribe("nowhere")
    assert caught.value.code == "not_subscribed"


def test_publishing_too_fast_is_rate_limited() -> None:
    settings = Settings(publish_rate=0.5, publish_burst=2)
    with serve(settings) as server, ChatClient(server.ws_url, "alice") as alice:
        alice.subscribe("lobby")
        alice.publish("lobby", "1")
        alice.publish("lobby", "2")
        with pytest.raises(ChatError) as caught:
            alice.publish("lobby", "3")
        assert caught.value.code == "rate_limited"


@pytest.mark.redis
def test_a_stopped_redis_surfaces_as_unavailable(redis_server: RedisServer,
                                                 redis_url: str) -> None:
    """When Redis is down, publish raises ``unavailable`` (a ChatError one may retry)."""
    settings = Settings(redis_url=redis_url, log_level="critical")
    with serve(settings) as server, ChatClient(server.ws_url, "alice") as alice:
        alice.subscribe("lobby")
        redis_server.stop()
        with pytest.raises(ChatError) as caught:
            alice.publish("lobby", "anyone?")
        assert caught.value.code == "unavailable"


@pytest.mark.redis
def test_a_broker_reconnect_is_reported_as_a_gap(redis_server: RedisServer,
                                                 redis_url: str) -> None:
    """When the server's Redis comes back, on_gap says which channels may have missed some."""
    settings = Settings(redis_url=redis_url, redis_probe_interval=0.1, log_level="critical")
    gaps: queue.Queue[tuple[str, str]] = queue.Queue()
    with serve(settings) as server, ChatClient(server.ws_url, "alice") as alice:
        alice.subscribe("lobby")
        alice.on_gap(lambda channel, reason: gaps.put((channel, reason)))
        redis_server.stop()
        redis_server.start()
        channel, reason = gaps.get(timeout=WAIT)
        assert channel == "lobby" and "missed" in reason
        assert alice.state == "connected"


class SlowFilter:
    @hookimpl
    async def filter_message(self, message: Message) -> None:
        if message.text == "slow":
            await asyncio.sleep(1.0)


def test_a_reply_that_comes_too_late_raises_request_timeout() -> None:
    """RequestTimeout is a ChatError and a TimeoutError; the late reply is then ignored."""
    with serve(None, SlowFilter()) as server, ChatClient(server.ws_url, "alice") as alice:
        alice.subscribe("lobby")
        with pytest.raises(RequestTimeout) as caught:
            alice.publish("lobby", "slow", timeout=0.1)
        assert isinstance(caught.value, ChatError) and isinstance(caught.value, TimeoutError)
        assert alice.publish("lobby", "fast")  # the client still works
        texts = {alice.receive(WAIT).text, alice.receive(WAIT).text}
        assert texts == {"slow", "fast"}


def test_connecting_to_nothing_raises_connect_failed() -> None:
    with pytest.raises(ConnectFailed) as caught:
        ChatClient(f"ws://127.0.0.1:{free_port()}/ws", "alice", timeout=2)
    assert caught.value.status is None
    assert isinstance(caught.value, ChatError)


def test_an_invalid_client_id_is_refused_with_400(server: ServerThread) -> None:
    with pytest.raises(ConnectFailed) as caught:
        ChatClient(server.ws_url, "not valid!")
    assert caught.value.status == 400
    assert "invalid client_id" in caught.value.message


def test_a_token_names_the_client_and_a_bad_one_is_refused_with_401() -> None:
    import jwt

    with serve(Settings(jwt_secret="s3cret-for-tests-only-0123456789")) as server:
        token = jwt.encode({"sub": "alice"}, "s3cret-for-tests-only-0123456789", "HS256")
        with ChatClient(server.ws_url, token=token) as alice:
            assert alice.client_id == "alice"
        with pytest.raises(ConnectFailed) as caught:
            ChatClient(server.ws_url, token="not-a-token")
        assert caught.value.status == 401


class Gatekeeper:
    @hookimpl
    def authenticate(self, request: Any) -> str | None:
        if request.args.get("client_id") == "mallory":
            raise Forbidden("mallory is banned")
        return None


def test_a_refusing_plugin_is_reported_with_403_and_its_reason() -> None:
    with serve(None, Gatekeeper()) as server:
        with pytest.raises(ConnectFailed) as caught:
            ChatClient(server.ws_url, "mallory")
        assert caught.value.status == 403
        assert "mallory is banned" in caught.value.message
        ChatClient(server.ws_url, "alice").close()


# -- receiving and callbacks -----------------------------------------------------------------


def test_receive_times_out_when_nothing_arrives(chat: OpenClient) -> None:
    alice = chat("alice")
    with pytest.raises(RequestTimeout):
        alice.receive(timeout=0.05)


def test_assert_quiet_passes_when_nothing_arrives(chat: OpenClient) -> None:
    alice = chat("alice")
    alice.subscribe("lobby")
    alice.assert_quiet(0.1)


def test_assert_quiet_names_what_arrived_and_keeps_it(chat: OpenClient) -> None:
    """A message that came (or was already waiting) fails the assertion, named in it,
    and stays available to receive()."""
    alice = chat("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "psst")
    with pytest.raises(AssertionError, match=r"1 arrived: alice@lobby: 'psst'"):
        alice.assert_quiet(WAIT)
    assert alice.receive(WAIT).text == "psst"


def test_messages_iterates_until_quiet(chat: OpenClient) -> None:
    alice = chat("alice")
    alice.subscribe("lobby")
    for text in ("a", "b", "c"):
        alice.publish("lobby", text)
    assert [m.text for m in alice.messages(timeout=1.0)] == ["a", "b", "c"]


def test_on_message_callbacks_may_call_the_client(chat: OpenClient) -> None:
    """A callback runs off the reader thread, so a bot can reply from inside it."""
    alice, bob = chat("alice"), chat("bob")
    alice.subscribe("lobby")
    bob.subscribe("lobby")
    seen: queue.Queue[Message] = queue.Queue()

    @bob.on_message
    def pong(message: Message) -> None:
        seen.put(message)
        if message.text == "ping":
            bob.publish(message.channel, "pong")

    alice.publish("lobby", "ping")
    assert [alice.receive(WAIT).text, alice.receive(WAIT).text] == ["ping", "pong"]
    assert [seen.get(timeout=WAIT).text, seen.get(timeout=WAIT).text] == ["ping", "pong"]
    bob.remove_callback(pong)
    alice.publish("lobby", "again")
    assert bob.receive(WAIT).text == "ping"  # the inbox still has everything
    assert [bob.receive(WAIT).text, bob.receive(WAIT).text] == ["pong", "again"]
    assert seen.empty()


def test_a_raising_callback_does_not_stop_delivery(chat: OpenClient) -> None:
    alice = chat("alice")
    alice.subscribe("lobby")
    got: queue.Queue[str] = queue.Queue()

    def broken(message: Message) -> None:
        raise ValueError("oops")

    alice.on_message(broken)
    alice.on_message(lambda m: got.put(m.text))
    alice.publish("lobby", "one")
    alice.publish("lobby", "two")
    assert [got.get(timeout=WAIT), got.get(timeout=WAIT)] == ["one", "two"]


def test_a_full_inbox_drops_the_oldest(chat: OpenClient) -> None:
    alice = chat("alice", inbox=3)
    alice.subscribe("lobby")
    done = threading.Event()
    alice.on_message(lambda m: m.text == "5" and done.set())
    for n in range(6):
        alice.publish("lobby", str(n))
    assert done.wait(WAIT)
    assert [m.text for m in alice.drain()] == ["3", "4", "5"]
    assert alice.dropped == 3


# -- reconnecting and closing ---------------------------------------------------------------


def test_reconnects_after_a_server_restart_and_resubscribes() -> None:
    """The client comes back on its own, joins its channels again and says so."""
    port = free_port()
    server = serve(port=port).start()
    events: queue.Queue[Any] = queue.Queue()
    try:
        alice = ChatClient(server.ws_url, "alice", reconnect_delay=0.05)
        alice.subscribe("lobby")
        alice.subscribe("dev")
        first_session = alice.session_id
        alice.on_disconnect(events.put)
        alice.on_reconnect(events.put)
        server.stop()
        dropped = events.get(timeout=WAIT)
        assert isinstance(dropped, Disconnected) and dropped.reconnecting
        assert dropped.code == 1001
        server = serve(port=port).start()
        back = events.get(timeout=WAIT)
        assert isinstance(back, Reconnected)
        assert back.channels == ["dev", "lobby"] and back.lost == {}
        assert alice.session_id != first_session and alice.reconnects == 1
        assert alice.state == "connected"
        with ChatClient(server.ws_url, "bob") as bob:
            assert sorted(bob.presence("lobby")) == ["alice"]
            bob.subscribe("lobby")
            bob.publish("lobby", "welcome back")
        assert alice.receive(WAIT).text == "welcome back"
        alice.close()
    finally:
        server.stop()


def test_requests_during_a_drop_fail_or_wait_for_the_new_connection() -> None:
    """A request made while reconnecting waits for the new connection (within its timeout)."""
    port = free_port()
    server = serve(port=port).start()
    reconnected = threading.Event()
    try:
        alice = ChatClient(server.ws_url, "alice", reconnect_delay=0.05)
        alice.on_reconnect(lambda event: reconnected.set())
        server.stop()
        with pytest.raises((RequestTimeout, NotConnected)):
            alice.channels(timeout=0.2)
        server = serve(port=port).start()
        assert alice.channels(timeout=WAIT) == []
        assert reconnected.wait(WAIT)
        alice.close()
    finally:
        server.stop()


def test_without_reconnect_a_drop_closes_the_client() -> None:
    server = serve().start()
    events: queue.Queue[Disconnected] = queue.Queue()
    alice = ChatClient(server.ws_url, "alice", reconnect=False)
    try:
        alice.on_disconnect(events.put)
        server.stop()
        event = events.get(timeout=WAIT)
        assert event.reconnecting is False
        wait_until(lambda: alice.state == "closed", WAIT)
        with pytest.raises(ClientClosed):
            alice.receive(timeout=WAIT)
        with pytest.raises(ClientClosed):
            alice.ping()
    finally:
        alice.close()
        server.stop()


def test_the_client_gives_up_after_its_tries() -> None:
    server = serve().start()
    events: queue.Queue[Disconnected] = queue.Queue()
    alice = ChatClient(server.ws_url, "alice", reconnect_tries=2, reconnect_delay=0.01)
    try:
        alice.on_disconnect(events.put)
        server.stop()
        assert events.get(timeout=WAIT).reconnecting is True
        final = events.get(timeout=WAIT)
        assert final.reconnecting is False and "reconnect failed" in final.reason
        assert alice.state == "closed"
    finally:
        alice.close()


def test_a_policy_close_is_not_retried() -> None:
    """After 1008 (too many bad frames) reconnecting would only repeat the abuse."""
    with serve(Settings(max_bad_frames=2)) as server:
        alice = ChatClient(server.ws_url, "alice")
        closed = threading.Event()
        alice.on_disconnect(lambda event: event.code == 1008 and closed.set())
        for _ in range(3):  # the third bad frame is one too many; send nothing after it
            with contextlib.suppress(ChatError):
                alice.request("nonsense")
        assert closed.wait(WAIT)
        wait_until(lambda: alice.state == "closed", WAIT)
        assert alice.reconnects == 0
        alice.close()


def test_close_is_idempotent_and_wakes_receivers(chat: OpenClient) -> None:
    alice = chat("alice")
    woke: queue.Queue[BaseException] = queue.Queue()

    def wait_for_message() -> None:
        try:
            alice.receive()
        except BaseException as exc:  # reported through the queue
            woke.put(exc)

    waiter = threading.Thread(target=wait_for_message)
    waiter.start()
    alice.close()
    alice.close()
    waiter.join(WAIT)
    assert isinstance(woke.get(timeout=WAIT), ClientClosed)
    assert alice.state == "closed"
    with pytest.raises(ClientClosed):
        alice.subscribe("lobby")


def test_two_hundred_open_close_cycles_leak_no_threads_or_sockets() -> None:
    """Every client's threads end and its socket is closed by close()."""
    with ServerProcess({"QUART_CHAT_LOG_LEVEL": "warning"}) as server:
        ChatClient(server.ws_url, "warmup").close()  # first-use imports and caches
        threads = set(threading.enumerate())
        with ChatClient(server.ws_url, "probe"):
            assert len(_sockets_to(server.port)) == 1  # the check below can see a leak
        for n in range(200):
            with ChatClient(server.ws_url, f"c{n}") as client:
                if n % 2:
                    client.on_message(lambda message: None)
                    client.subscribe("lobby")
                    client.publish("lobby", "hi")
                    client.receive(WAIT)
        assert set(threading.enumerate()) - threads == set()
        assert _sockets_to(server.port) == set()


def test_ws_url_accepts_http_and_ws_forms() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert ws_url("https://chat.example/") == "wss://chat.example/ws"
    assert ws_url("ws://h:1/ws?x=1", client_id="a", token=None) == "ws://h:1/ws?x=1&client_id=a"
    with pytest.raises(ValueError):
        ws_url("ftp://h")


def _sockets_to(port: int) -> set[str]:
    """Inodes of this process's open TCP sockets whose remote end is ``port`` (Linux)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                mine.add(target[8:-1])
    remote = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    remote.add(fields[9])
    return mine & remote


# -- the notebook server helper ---------------------------------------------------------------


def test_start_server_runs_plugins_and_stops_its_clients(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """start_server() serves in-process plugins; stop() closes its clients and the server."""
    from quart_chat.embedded import SERVER_URL_ENV, start_server

    monkeypatch.delenv(SERVER_URL_ENV, raising=False)
    server = start_server(plugins=[Policy()])
    try:
        assert server.embedded
        alice = server.client("alice")
        with pytest.raises(ChatError) as caught:
            alice.subscribe("secret")
        assert caught.value.code == "forbidden"
    finally:
        server.stop()
    assert alice.state == "closed"
    with pytest.raises(ConnectFailed):
        ChatClient(server.url, "bob", timeout=2)


def test_start_server_loads_a_plugins_folder(tmp_path: Any, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    from quart_chat.embedded import SERVER_URL_ENV, start_server

    monkeypatch.delenv(SERVER_URL_ENV, raising=False)
    (tmp_path / "shout.py").write_text(
        "from quart_chat import hookimpl\n\n\n"
        "@hookimpl\ndef filter_message(message):\n"
        "    return message.replace(text=message.text.upper())\n"
    )
    with start_server(plugins_dir=tmp_path) as server, server.client("alice") as alice:
        alice.subscribe("lobby")
        alice.publish("lobby", "quiet")
        assert alice.receive(WAIT).text == "QUIET"


@pytest.mark.redis
def test_start_server_with_redis_connects_two_servers(redis_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from quart_chat.embedded import SERVER_URL_ENV, start_server

    monkeypatch.delenv(SERVER_URL_ENV, raising=False)
    with start_server(redis_url=redis_url) as east, start_server(redis_url=redis_url) as west:
        erin, walt = east.client("erin"), west.client("walt")
        erin.subscribe("wire")
        walt.subscribe("wire")
        erin.publish("wire", "across")
        assert walt.receive(WAIT).text == "across"


def test_the_server_url_variable_points_notebooks_elsewhere(
        server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """With QUART_CHAT_SERVER_URL set nothing is started; use_env=False starts one anyway."""
    from quart_chat.embedded import SERVER_URL_ENV, start_server

    monkeypatch.setenv(SERVER_URL_ENV, server.url)
    external = start_server()
    assert not external.embedded and external.url == server.ws_url
    with external.client("alice") as alice:
        assert alice.session_id in {s.id for s in server.service.sessions}
    external.stop()  # leaves that server alone:
    with ChatClient(server.ws_url, "bob") as bob:
        assert bob.ping() > 0
    own = start_server(use_env=False)
    try:
        assert own.embedded and own.url != server.ws_url
    finally:
        own.stop()
