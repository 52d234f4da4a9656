"""Security: tokens, origins, per-client caps, and what never reaches the logs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import websocket

from quart_chat.config import Settings
from quart_chat.testing import ServerProcess, ServerThread

from .helpers import SECRET, token, unsigned_token, wait_until
from .wsclient import Client


def _connect(ws_url: str, header: list[str] | None, origin: str | None,
             params: dict[str, str]) -> websocket.WebSocket:
    # websocket-client sends its own Origin unless told otherwise
    extra: dict[str, Any] = {"origin": origin} if origin is not None else {"suppress_origin": True}
    return websocket.create_connection(f"{ws_url}?{urlencode(params)}", timeout=5,
                                       header=header, **extra)


def refused(ws_url: str, header: list[str] | None = None, origin: str | None = None,
            **params: str) -> tuple[int, str]:
    """Open a handshake that must be refused: (HTTP status, reason from the body)."""
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        _connect(ws_url, header, origin, params)
    body = info.value.resp_body or b"{}"
    return info.value.status_code, json.loads(body).get("error", "")


def open_ws(ws_url: str, header: list[str] | None = None, origin: str | None = None,
            **params: str) -> Client:
    client = Client.__new__(Client)
    client.ws = _connect(ws_url, header, origin, params)
    from collections import deque

    client.inbox, client._pending, client._next_id = deque(), deque(), 0
    client.welcome = client.recv()
    assert client.welcome["type"] == "welcome", client.welcome
    return client


@pytest.fixture
def secured() -> Iterator[ServerThread]:
    settings = Settings(jwt_secret=SECRET, jwt_audience="chat", jwt_issuer="auth.example")
    with ServerThread(settings) as server:
        yield server


def good(sub: str = "alice", **claims: Any) -> str:
    return token(sub, aud="chat", iss="auth.example", **claims)


BAD_TOKENS = {
    "alg none": lambda: unsigned_token(sub="alice", aud="chat", iss="auth.example",
                                       exp=int(time.time()) + 600),
    "wrong signature": lambda: token("alice", secret="not-the-secret-but-long-enough-0123",
                                     aud="chat", iss="auth.example"),
    "expired": lambda: good(exp=int(time.time()) - 60),
    "malformed": lambda: "this.is-not-a.jwt",
    "garbage base64": lambda: "eyJhbGciOiJIUzI1NiJ9.!!!!.sig",
    "wrong audience": lambda: token("alice", aud="other", iss="auth.example"),
    "no audience": lambda: token("alice", iss="auth.example"),
    "wrong issuer": lambda: token("alice", aud="chat", iss="evil.example"),
    "no sub": lambda: token(None, aud="chat", iss="auth.example"),
    "numeric sub": lambda: token(42, aud="chat", iss="auth.example"),  # type: ignore[arg-type]
    "channels not a list": lambda: good(channels={"a": 1}),
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_before_the_socket_is_accepted(secured, name):
    """alg=none, wrong signature, expired, malformed... get HTTP 401 with a reason."""
    status, reason = refused(secured.ws_url, token=BAD_TOKENS[name]())
    assert status == 401
    assert reason
    assert not secured.service.sessions


def test_a_token_is_required_when_a_secret_is_configured(secured):
    """Without a token, even a plain client_id is refused: 401 naming both ways to send one."""
    status, reason = refused(secured.ws_url, client_id="alice")
    assert status == 401 and "Bearer" in reason


def test_token_in_query_or_bearer_header_sets_the_client_id(secured):
    """``sub`` is the client id, whether the token came as ?token= or Authorization: Bearer."""
    by_query = open_ws(secured.ws_url, token=good("alice"))
    by_header = open_ws(secured.ws_url, header=[f"Authorization: Bearer {good('bob')}"])
    spoofed = open_ws(secured.ws_url, token=good("carol"), client_id="mallory")
    assert by_query.welcome["client_id"] == "alice"
    assert by_header.welcome["client_id"] == "bob"
    assert spoofed.welcome["client_id"] == "carol"
    for client in (by_query, by_header, spoofed):
        client.close()


def test_channels_claim_limits_subscribe_publish_and_history(secured):
    """A token's ``channels`` claim allows exactly those channels (``prefix*`` globs)."""
    client = open_ws(secured.ws_url, token=good(channels=["lobby", "team:*"]))
    try:
        client.ok("subscribe", channel="lobby")
        client.ok("subscribe", channel="team:red")
        assert client.error("subscribe", channel="lobbyist")["code"] == "forbidden"
        assert client.error("subscribe", channel="admin")["code"] == "forbidden"
        assert client.error("subscribe", channel="team")["code"] == "forbidden"
        assert client.error("history", channel="admin")["code"] == "forbidden"
        assert client.ok("publish", channel="team:red", text="hi")["mid"]
        assert sorted(client.ok("channels")["channels"]) == ["lobby", "team:red"]
    finally:
        client.close()
    unlimited = open_ws(secured.ws_url, token=good())
    try:
        unlimited.ok("subscribe", channel="admin")
    finally:
        unlimited.close()


def test_development_mode_and_open_origins_are_announced_at_startup(caplog):
    """Without a secret any client_id works, and the log says so (and about origins)."""
    caplog.set_level(logging.INFO, logger="quart_chat")
    with ServerThread(Settings()) as server:
        client = Client(server.ws_url, "anyone")
        assert client.welcome["client_id"] == "anyone"
        client.close()
    text = caplog.text
    assert "development mode" in text
    assert "QUART_CHAT_ALLOWED_ORIGINS" in text


ALLOWED = ("https://chat.example.com", "http://localhost:3000")


@pytest.fixture
def guarded() -> Iterator[ServerThread]:
    with ServerThread(Settings(allowed_origins=ALLOWED)) as server:
        yield server


@pytest.mark.parametrize("origin", [
    "https://chat.example.com.evil.net",
    "https://evil.net/https://chat.example.com",
    "https://evilchat.example.com",
    "https://chat.example.co",
    "http://chat.example.com",
    "https://chat.example.com:8443",
    "http://localhost:30001",
    "null",
    "",
])
def test_origins_not_on_the_list_get_403(guarded, origin):
    """Exact matching: no prefix, suffix, substring, scheme or port tricks get through."""
    status, reason = refused(guarded.ws_url, origin=origin, client_id="eve")
    assert status == 403 and "not allowed" in reason


@pytest.mark.parametrize("origin", [*ALLOWED, None])
def test_listed_origins_and_non_browser_clients_pass(guarded, origin):
    """A listed origin is accepted; a handshake with no Origin (scripts) passes too."""
    client = open_ws(guarded.ws_url, origin=origin, client_id="alice")
    client.close()


def test_connections_per_client_id_are_capped_with_429():
    """The 4th socket of one client id is refused (429); closing one frees a slot."""
    with ServerThread(Settings(max_connections_per_client=3)) as server:
        clients = [Client(server.ws_url, "alice") for _ in range(3)]
        status, reason = refused(server.ws_url, client_id="alice")
        assert status == 429 and "at most 3" in reason
        other = Client(server.ws_url, "bob")  # other ids are not affected
        clients[0].close()
        wait_until(lambda: sum(s.client_id == "alice" for s in server.service.sessions) == 2,
                   5, "session cleaned up")
        clients[0] = Client(server.ws_url, "alice")
        for client in [*clients, other]:
            client.close()


@pytest.mark.redis
def test_connection_cap_counts_sessions_on_every_process(redis_url):
    """Two processes sharing Redis enforce one cap per client id between them."""
    settings = Settings(redis_url=redis_url, max_connections_per_client=3)
    with ServerThread(settings) as one, ServerThread(settings) as two:
        clients = [Client(one.ws_url, "alice"), Client(one.ws_url, "alice"),
                   Client(two.ws_url, "alice")]
        assert refused(two.ws_url, client_id="alice")[0] == 429
        assert refused(one.ws_url, client_id="alice")[0] == 429
        for client in clients:
            client.close()


SECRET_BODY = "top-secret-body-7f3a9c"


def test_tokens_and_message_bodies_never_reach_the_logs(redis_url):
    """At debug level, with good and bad tokens, errors and refusals: no token, no body."""
    env = {"QUART_CHAT_JWT_SECRET": SECRET, "QUART_CHAT_LOG_LEVEL": "debug",
           "QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_MAX_TEXT_LENGTH": "100"}
    valid = token("alice")
    forged = token("alice", secret="forged-secret-forged-secret-forged-secret")
    with ServerProcess(env) as server:
        client = open_ws(server.ws_url, token=valid)
        client.ok("subscribe", channel="lobby")
        client.ok("publish", channel="lobby", text=SECRET_BODY)
        too_large = client.error("publish", channel="lobby", text=SECRET_BODY * 10)
        assert too_large["code"] == "too_large"
        not_subscribed = client.error("publish", channel="nowhere", text=SECRET_BODY)
        assert not_subscribed["code"] == "not_subscribed"
        client.send('{"type": "publish", "channel": "lobby", "text": "' + SECRET_BODY)
        assert client.next("error")["code"] == "bad_frame"
        client.close()
        bearer = open_ws(server.ws_url, header=[f"Authorization: Bearer {valid}"])
        bearer.close()
        assert refused(server.ws_url, token=forged)[0] == 401
        assert refused(server.ws_url, header=[f"Authorization: Bearer {forged}"])[0] == 401
        server.stop()
        log = server.log()
    assert "debug" in log.lower() or "DEBUG" in log  # the level really was debug
    for secret in (valid, forged, SECRET, SECRET_BODY, valid.split(".")[2],
                   forged.split(".")[2]):
        assert secret not in log
