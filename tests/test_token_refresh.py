"""Token lifetime: a session ends (4003) when its token expires, unless a ``refresh``
frame brought a new token for the same ``sub``; the clients refresh on their own.

Against ``quart-chat serve`` processes with an HMAC secret; tokens live 2-4 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from quart_chat.client import ChatClient
from quart_chat.protocol import CLOSE_TOKEN_EXPIRED
from quart_chat.testing import ServerProcess, ServerThread, free_port

from .helpers import SECRET, token, wait_until
from .wsclient import Client, close_code

#: Longest accepted delay between a token's ``exp`` and the close frame (a bound for a
#: busy shared machine, not a promise of speed; the measured delay is a few ms).
CLOSE_BOUND = 3.0


def short_token(sub: str, ttl: int = 2, **claims: object) -> tuple[str, int]:
    """A token for ``sub`` expiring in ``ttl`` whole seconds from now, and its ``exp``."""
    exp = int(time.time()) + ttl
    return token(sub, exp=exp, **claims), exp


@pytest.fixture(scope="module")
def secured() -> Iterator[ServerProcess]:
    """One server process with a token secret for the module."""
    with ServerProcess({"QUART_CHAT_JWT_SECRET": SECRET}) as server:
        yield server


@pytest.fixture
def connect() -> Iterator[Callable[[ServerProcess, str], Client]]:
    """``connect(server, token)``: a raw protocol client, closed after the test."""
    clients: list[Client] = []

    def open_client(server: ServerProcess, signed: str) -> Client:
        clients.append(Client(server.ws_url, None, token=signed))
        return clients[-1]

    yield open_client
    for client in clients:
        client.close()


def closed_after_exp(client: Client, exp: int) -> tuple[int | None, float]:
    """Wait for the server's close frame: its code and how long after ``exp`` it came."""
    client.ws.settimeout(exp - time.time() + CLOSE_BOUND + 5)
    code = close_code(client.ws)
    return code, time.time() - exp


def test_a_session_is_closed_with_4003_when_its_token_expires(secured, connect):
    """No refresh: the close frame carries 4003 right after ``exp``, not before (three
    sessions, a second apart; ``-s`` prints the delays)."""
    sessions = []
    for n in range(3):
        signed, exp = short_token(f"expiring{n}", ttl=2 + n)
        sessions.append((connect(secured, signed), exp))
        sessions[-1][0].ok("subscribe", channel="lobby")
    delays = []
    for client, exp in sessions:
        code, late = closed_after_exp(client, exp)
        assert code == CLOSE_TOKEN_EXPIRED
        assert -0.05 <= late < CLOSE_BOUND, late
        delays.append(late)
    print(f"\nexp -> close frame 4003: {', '.join(f'{d * 1000:.1f} ms' for d in delays)}")
    wait_until(lambda: "token expired" in secured.log(), 10, "the disconnect log line")


def test_a_refresh_before_expiry_keeps_the_session_open_past_the_first_exp(secured, connect):
    signed, exp = short_token("refreshing")
    client = connect(secured, signed)
    client.ok("subscribe", channel="lobby")
    renewed, renewed_exp = short_token("refreshing", ttl=4)
    client.ok("refresh", token=renewed)
    time.sleep(max(0.0, exp - time.time()) + 1.0)
    client.ok("ping")  # past the first exp: still open, still subscribed
    assert client.ok("channels")["channels"] == ["lobby"]
    code, late = closed_after_exp(client, renewed_exp)  # the new exp applies
    assert code == CLOSE_TOKEN_EXPIRED
    assert -0.05 <= late < CLOSE_BOUND, late


def test_a_refused_refresh_changes_nothing_and_the_old_expiry_stands(secured, connect):
    """Another ``sub``, an expired token, a forged one, no token field: refused (the
    session stays open), and the session still ends at its first ``exp``."""
    signed, exp = short_token("mallory")
    client = connect(secured, signed)
    refused = {
        "another sub": token("alice", exp=exp + 600),
        "expired": token("mallory", exp=int(time.time()) - 10),
        "forged": token("mallory", secret="not-the-secret-but-long-enough-for-hs256"),
        "not a jwt": "x.y.z",
    }
    for why, bad in refused.items():
        reply = client.error("refresh", token=bad)
        assert reply["code"] == "forbidden", (why, reply)
    assert "another client id" in client.error("refresh", token=refused["another sub"])["message"]
    assert client.error("refresh")["code"] == "bad_frame"
    client.ok("ping")
    code, late = closed_after_exp(client, exp)
    assert code == CLOSE_TOKEN_EXPIRED
    assert -0.05 <= late < CLOSE_BOUND, late


def test_a_refresh_that_drops_a_channel_unsubscribes_it_and_stops_delivery(secured, connect):
    alice = connect(secured, token("carol", channels=["keep", "drop"]))
    bob = connect(secured, token("dave"))
    for channel in ("keep", "drop"):
        alice.ok("subscribe", channel=channel)
        bob.ok("subscribe", channel=channel)
    alice.ok("refresh", token=token("carol", channels=["keep", "other*"]))
    assert alice.next("unsubscribed") == {
        "type": "unsubscribed", "channel": "drop",
        "reason": "the refreshed token does not allow this channel",
    }
    assert alice.ok("channels")["channels"] == ["keep"]
    assert bob.ok("presence", channel="drop")["clients"] == ["dave"]
    bob.ok("publish", channel="drop", text="not for carol")
    bob.ok("publish", channel="keep", text="for carol")
    assert alice.next("message")["text"] == "for carol"  # in order: nothing from drop first
    assert alice.error("subscribe", channel="drop")["code"] == "forbidden"
    alice.ok("subscribe", channel="other-room")  # the new claim's pattern applies


def test_a_refresh_without_a_token_key_is_an_error():
    """Development mode: no key can verify a token, so nothing can be refreshed."""
    with ServerThread() as server:
        client = Client(server.ws_url, "alice")
        try:
            reply = client.error("refresh", token=token("alice"))
            assert reply["code"] == "forbidden"
            assert "development mode" in reply["message"]
            client.ok("ping")
        finally:
            client.close()


class Provider:
    """A token provider for ``sub``: each call signs a fresh token living ``ttl`` s."""

    def __init__(self, sub: str, ttl: int) -> None:
        self.sub, self.ttl = sub, ttl
        self.issued: list[tuple[float, int]] = []  # (when, exp) per call
        self._lock = threading.Lock()

    def __call__(self) -> str:
        signed, exp = short_token(self.sub, self.ttl)
        with self._lock:
            self.issued.append((time.time(), exp))
        return signed


def test_the_client_with_a_token_provider_outlives_several_expiries(secured):
    """No action by the user: the client refreshes ahead of each exp on its own."""
    provider = Provider("eve", ttl=4)
    with ChatClient(secured.ws_url, token_provider=provider) as client:
        session = client.session_id
        client.subscribe("lobby")
        first_exp = provider.issued[0][1]
        time.sleep(max(0.0, first_exp - time.time()) + 7.0)  # past three exps at least
        assert provider.issued[-1][1] - first_exp >= 6, provider.issued
        assert client.connected and client.reconnects == 0
        assert client.session_id == session  # one session throughout
        client.publish("lobby", "still here")
        assert client.receive(timeout=5).text == "still here"


def test_an_expired_token_at_reconnect_is_replaced_by_the_provider():
    """The server is away longer than the token lives: the client reconnects with a new
    token from the provider (a fixed token would be refused with 401) and rejoins."""
    port = free_port()
    env = {"QUART_CHAT_JWT_SECRET": SECRET}
    provider = Provider("frank", ttl=2)
    with ServerProcess(env, port=port) as server:
        client = ChatClient(server.ws_url, token_provider=provider, reconnect_tries=40)
        client.subscribe("lobby")
        connected_with = provider.issued[-1][1]
    try:
        time.sleep(max(0.0, connected_with - time.time()) + 1.0)
        restarted = time.time()
        with ServerProcess(env, port=port):
            wait_until(lambda: client.connected, 30, "reconnected")
            assert connected_with < restarted < max(exp for _, exp in provider.issued)
            assert client.subscriptions == ["lobby"]
            assert client.channels() == ["lobby"]
    finally:
        client.close()


def test_a_fixed_token_that_expired_is_not_retried_on_reconnect():
    """The contrast: without a provider, reconnecting with the expired token is refused
    (401) and the client gives up at once instead of retrying a dead token."""
    port = free_port()
    env = {"QUART_CHAT_JWT_SECRET": SECRET}
    with ServerProcess(env, port=port) as server:
        signed, exp = short_token("grace", ttl=2)
        client = ChatClient(server.ws_url, token=signed, reconnect_tries=40)
    time.sleep(max(0.0, exp - time.time()) + 0.5)
    with ServerProcess(env, port=port):
        wait_until(lambda: client.state == "closed", 30, "gave up")
    client.close()


def test_the_client_leaves_a_channel_the_server_unsubscribed(secured):
    """An ``unsubscribed`` frame takes the channel out of the client's subscriptions, so
    a reconnect does not ask for it again."""
    tokens = iter([token("heidi", channels=["a", "b"]), token("heidi", channels=["a"])])
    with ChatClient(secured.ws_url, token_provider=lambda: next(tokens)) as client:
        client.subscribe("a")
        client.subscribe("b")
        client.request("refresh", token=next(tokens))
        assert client.subscriptions == ["a"]
        assert client.channels() == ["a"]


def test_the_refresh_lead_time():
    """80% of the lifetime or 30 s before exp, whichever is earlier, not before half."""
    from quart_chat.client import _refresh_lead, _token_exp

    assert _refresh_lead(3600) == pytest.approx(2880)
    assert _refresh_lead(120) == pytest.approx(90)
    assert _refresh_lead(4) == pytest.approx(2)
    assert _refresh_lead(-5) < 0  # already expired: refresh now
    assert _token_exp(token("x", exp=1234567890)) == 1234567890
    assert _token_exp("not a token") is None
    with pytest.raises(ValueError):
        ChatClient("ws://127.0.0.1:1/ws", token="t", token_provider=lambda: "t")
