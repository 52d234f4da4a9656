"""Tokens from an identity provider (a public key, a JWKS with rotation) beside the HMAC
secret, and ``quart-chat token`` for development tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from quart_chat.config import Settings
from quart_chat.errors import ConfigError
from quart_chat.testing import ServerThread

from .helpers import SECRET, token, unsigned_token
from .test_security import open_ws, refused

ALGORITHMS = {"rsa": "RS256", "ec": "ES256"}


def private_key(kind: str) -> Any:
    """A fresh key pair made for this test (never a fixed key)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def signed(key: Any, kind: str, sub: str = "alice", kid: str | None = None,
           **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 600, **claims}
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=ALGORITHMS[kind], headers=headers)


def hmac_signed_with(secret: bytes, **claims: Any) -> str:
    """HS256 over ``claims`` with ``secret`` as the HMAC key: the alg-confusion forgery
    (PyJWT refuses to make it, so it is assembled by hand)."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


class JwksServer:
    """An identity provider's JWKS endpoint on loopback: keys can be rotated; fetches
    are counted."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": [owner.jwk(kid, key)
                                            for kid, key in owner.keys.items()]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    @staticmethod
    def jwk(kid: str, key: Any) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else (
            jwt.algorithms.ECAlgorithm)
        value = json.loads(algorithm.to_jwk(key.public_key()))
        kind = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
        return {**value, "kid": kid, "use": "sig", "alg": ALGORITHMS[kind]}

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(params=sorted(ALGORITHMS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def with_public_key(tmp_path, kind) -> Iterator[tuple[ServerThread, Any]]:
    """A server verifying tokens by a PEM public key (and an HMAC secret beside it)."""
    key = private_key(kind)
    path = tmp_path / "idp.pem"
    path.write_bytes(public_pem(key))
    settings = Settings(jwt_public_key=str(path), jwt_secret=SECRET)
    with ServerThread(settings) as server:
        yield server, key


def test_tokens_signed_by_the_identity_provider_key_are_accepted(with_public_key, kind):
    """RS256 / ES256 tokens verified by QUART_CHAT_JWT_PUBLIC_KEY; the HMAC secret still
    works beside it; ``sub`` is the client id and ``channels`` applies."""
    server, key = with_public_key
    client = open_ws(server.ws_url, token=signed(key, kind, channels=["room*"]))
    assert client.welcome["client_id"] == "alice"
    client.ok("subscribe", channel="room-1")
    assert client.error("subscribe", channel="private")["code"] == "forbidden"
    client.close()
    bob = open_ws(server.ws_url, token=token("bob"))
    assert bob.welcome["client_id"] == "bob"
    bob.close()


def test_forged_wrong_key_and_expired_tokens_are_refused(with_public_key, kind):
    """HS256 signed with the public key PEM (alg confusion), alg none, another key,
    an expired token: 401 before the socket is accepted."""
    server, key = with_public_key
    pem = public_pem(key)
    exp = int(time.time()) + 600
    cases = {
        "hs256 with the public key": hmac_signed_with(pem, sub="alice", exp=exp),
        "alg none": unsigned_token(sub="alice", exp=exp),
        "another key": signed(private_key(kind), kind),
        "expired": signed(key, kind, exp=int(time.time()) - 60),
    }
    for name, bad in cases.items():
        status, reason = refused(server.ws_url, token=bad)
        assert (status, bool(reason)) == (401, True), name
    assert "expired" in refused(server.ws_url, token=cases["expired"])[1]
    assert not server.service.sessions


def test_jwks_keys_rotate_and_unknown_key_ids_refetch_within_bounds():
    """A token naming a new ``kid`` refetches the JWKS once; a retired key is refused;
    a burst of unknown key ids does not turn into a fetch per handshake."""
    first, second = private_key("rsa"), private_key("ec")
    with JwksServer() as idp:
        idp.keys = {"k1": first}
        with ServerThread(Settings(jwks_url=idp.url)) as server:
            alice = open_ws(server.ws_url, token=signed(first, "rsa", "alice", kid="k1"))
            assert alice.welcome["client_id"] == "alice"
            assert idp.fetches == 1
            alice.close()
            idp.keys = {"k2": second}  # the provider rotates
            bob = open_ws(server.ws_url, token=signed(second, "ec", "bob", kid="k2"))
            assert (bob.welcome["client_id"], idp.fetches) == ("bob", 2)
            bob.close()
            for n in range(5):
                status, _ = refused(server.ws_url,
                                    token=signed(second, "ec", "eve", kid=f"unknown{n}"))
                assert status == 401
            assert idp.fetches == 2  # bounded: no refetch right after the last one
            retired = signed(first, "rsa", "alice", kid="k1")
            assert refused(server.ws_url, token=retired)[0] == 401
            confused = hmac_signed_with(public_pem(second), sub="eve",
                                        exp=int(time.time()) + 600)
            assert refused(server.ws_url, token=confused)[0] == 401


def test_an_unreachable_jwks_refuses_with_503():
    with JwksServer() as idp:
        url = idp.url
    with ServerThread(Settings(jwks_url=url)) as server:
        assert refused(server.ws_url, token=signed(private_key("ec"), "ec", kid="k"))[0] == 503


def test_require_exp_refuses_tokens_without_expiry():
    with ServerThread(Settings(jwt_secret=SECRET, require_exp=True)) as server:
        status, reason = refused(server.ws_url, token=token("alice", exp=None))
        assert status == 401 and "exp" in reason
        alice = open_ws(server.ws_url, token=token("alice"))
        assert alice.welcome["client_id"] == "alice"
        alice.close()


def test_token_settings_are_checked_at_startup(tmp_path):
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="QUART_CHAT_JWT_PUBLIC_KEY"):
        Settings().replace(jwt_public_key=str(tmp_path / "bad.pem"))
    with pytest.raises(ConfigError, match="QUART_CHAT_JWKS_URL"):
        Settings().replace(jwks_url="file:///etc/passwd")
    assert Settings.from_env({"QUART_CHAT_REQUIRE_EXP": "true"}).require_exp is True
    with pytest.raises(ConfigError, match="QUART_CHAT_REQUIRE_EXP"):
        Settings.from_env({"QUART_CHAT_REQUIRE_EXP": "maybe"})
    assert Settings(jwks_url="https://idp.example/jwks").tokens_required


def _token_command(*args: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "QUART_CHAT_JWT_SECRET"}
    if secret is not None:
        env["QUART_CHAT_JWT_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "quart_chat", "token", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_token_command_prints_a_token_a_secured_server_accepts():
    """``quart-chat token SUB --channels --ttl``: sub, channel globs and expiry apply."""
    done = _token_command("alice", "--channels", "room*,lobby", "--ttl", "2m", secret=SECRET)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    claims = jwt.decode(printed, SECRET, algorithms=["HS256"])
    assert 110 <= claims["exp"] - time.time() <= 120
    with ServerThread(Settings(jwt_secret=SECRET)) as server:
        client = open_ws(server.ws_url, token=printed)
        assert client.welcome["client_id"] == "alice"
        client.ok("subscribe", channel="room-7")
        client.ok("subscribe", channel="lobby")
        assert client.error("subscribe", channel="ops")["code"] == "forbidden"
        client.close()


def test_the_token_command_without_a_secret_says_how_to_configure_one():
    done = _token_command("alice", secret=None)
    assert done.returncode == 2
    assert "QUART_CHAT_JWT_SECRET" in done.stderr and "--jwt-secret" in done.stderr
    assert _token_command("alice", "--ttl", "soon", secret=SECRET).returncode == 2
