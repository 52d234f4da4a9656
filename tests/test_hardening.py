"""Issue 13, probed as an attacker would and kept as tests: sessions that always end,
an outbound queue bounded in bytes, presence behind authorization, and the smaller
holes (connection-cap race, nested frames, the static page, origins, ``before``).

Each test runs against a real server (and a real Redis where the hole was in Redis) and
prints the measured figure, so ``pytest -s`` shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from quart_chat.config import Settings
from quart_chat.testing import RedisServer, ServerProcess, ServerThread

from .helpers import SECRET, health, raw_handshake, rss_kib, token, wait_until, ws_frame
from .wsclient import Client

ROOT = Path(__file__).parent.parent

#: Frames a leaver sends after subscribing, each waiting on Redis, none read.
MID_REQUEST = [{"type": kind, "id": n, "channel": "room", "text": "x"}
               for n, kind in enumerate(["presence", "publish", "history"] * 2, start=2)]


def leave_mid_request(port: int, client_id: str) -> int:
    """Subscribe, send frames that wait on Redis, close without reading: HTTP status."""
    sock, status, _ = raw_handshake(port, f"client_id={client_id}")
    try:
        if status == 101:
            frames = [{"type": "subscribe", "id": 1, "channel": "room"}, *MID_REQUEST]
            sock.sendall(b"".join(ws_frame(json.dumps(frame)) for frame in frames))
    finally:
        sock.close()
    return status


def descriptors(server: ServerProcess, redis: RedisServer) -> tuple[int, int]:
    """(open descriptors other than Redis connections, sockets of WebSocket clients)."""
    process = psutil.Process(server.pid)
    sockets = process.net_connections(kind="tcp")
    to_redis = sum(1 for c in sockets if c.raddr and c.raddr.port == redis.port)
    clients = sum(1 for c in sockets if c.laddr and c.laddr.port == server.port
                  and c.status != psutil.CONN_LISTEN)
    return process.num_fds() - to_redis, clients


@pytest.mark.redis
def test_sessions_that_leave_mid_request_always_end(redis_server, redis_url):
    """100 clients subscribe, send presence/publish/history without reading and close:
    every session ends (healthz, Redis records, descriptors back to baseline) and their
    client ids are admitted again. redis-py can swallow the cancellation of a receive
    task mid-command; a session that cancelled once and waited kept 30-95 of them."""
    env = {"QUART_CHAT_REDIS_URL": redis_url}
    with ServerProcess(env) as server:
        baseline = descriptors(server, redis_server)
        assert health(server.url)["sessions"] == 0
        statuses: list[int] = []
        for wave in range(10):  # 10 at a time, 8 client ids (the cap is 16 each)
            threads = [threading.Thread(target=lambda n=n: statuses.append(
                leave_mid_request(server.port, f"leaver{n % 8}")))
                for n in range(wave * 10, wave * 10 + 10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        started = time.monotonic()
        try:
            wait_until(lambda: health(server.url)["sessions"] == 0, 10, "every session ended")
        finally:
            left = health(server.url)["sessions"]
            print(f"\nleft mid-request: {left}/100 sessions still open "
                  f"{time.monotonic() - started:.1f}s later; statuses "
                  f"{sorted(set(statuses))}; descriptors {baseline} -> "
                  f"{descriptors(server, redis_server)}")
        wait_until(lambda: descriptors(server, redis_server)[1] == 0, 5, "client sockets closed")
        assert descriptors(server, redis_server)[0] <= baseline[0]
        assert statuses == [101] * 100
        assert all(leave_mid_request(server.port, f"leaver{n}") == 101 for n in range(8))
        wait_until(lambda: health(server.url)["sessions"] == 0, 10, "the last ones ended")
        records = redis_server.cli("--scan", "--pattern", "quart-chat:*").split()
        assert [key for key in records if key.split(":")[1] not in ("node", "nodes")] == []


# -- 3: the outbound queue is bounded in bytes ---------------------------------------------

#: A ``ping`` whose id (echoed in the result) fills most of a 32 KB frame.
BIG_ID = "i" * 30_000


def non_reader(port: int, client_id: str) -> socket.socket:
    """A WebSocket that never reads: a tiny receive buffer, nothing ever taken from it."""
    sock, status, _ = raw_handshake(port, f"client_id={client_id}")
    assert status == 101
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.mark.parametrize("kind", ["history", "ping"])
def test_clients_that_never_read_large_replies_are_closed_before_memory_grows(kind):
    """A client asking for 0.9 MB of history 8 times a second, or four echoing 30 KB ping
    ids 500 times a second, and never reading: the server's memory stays flat and each
    is closed as a slow consumer (4000). Bounded in frames only (1,024 per session),
    the history client alone grew the server by ~60 MB in 10 s, the pingers by ~95 MB,
    and none was closed."""
    env = {"QUART_CHAT_PLUGINS": "tests.big_history_plugin",
           "QUART_CHAT_PING_INTERVAL": "3600", "QUART_CHAT_PING_TIMEOUT": "3600",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with ServerProcess(env) as server:
        warm = non_reader(server.port, "warm-up")  # plugin, encoder and pools warmed
        warm.sendall(ws_frame(json.dumps({"type": "history", "id": 1, "channel": "c",
                                          "limit": 200})))
        time.sleep(0.5)
        warm.close()
        wait_until(lambda: health(server.url)["sessions"] == 0, 5, "warm-up ended")
        rss_before = rss_kib(server.pid)
        peak = rss_before
        count = 1 if kind == "history" else 4
        clients = [non_reader(server.port, f"sloth{n}") for n in range(count)]
        started = time.monotonic()
        closed_after = None
        sent = 0
        while time.monotonic() - started < 10 and closed_after is None:
            for sock in clients:
                if kind == "history":
                    frame = {"type": "history", "id": sent, "channel": "c", "limit": 200}
                else:
                    frame = {"type": "ping", "id": f"{BIG_ID}{sent}"}
                with contextlib.suppress(OSError):  # closed by the server: the point
                    sock.sendall(ws_frame(json.dumps(frame)))
            sent += 1
            time.sleep(1 / 8 if kind == "history" else 1 / 500)
            if sent % (4 if kind == "history" else 50) == 0:
                peak = max(peak, rss_kib(server.pid))
                if health(server.url)["sessions"] == 0:
                    closed_after = time.monotonic() - started
        peak = max(peak, rss_kib(server.pid))
        growth = peak - rss_before
        left = health(server.url)["sessions"]

        def closes() -> int:
            return len(re.findall(r"disconnect client_id=sloth\d .* close_code=4000",
                                  server.log()))

        print(f"\nnever reading ({kind}): {sent} requests per client, server RSS peak growth "
              f"{growth / 1024:.1f} MB; {len(clients) - left}/{len(clients)} closed as slow "
              f"consumers" + (f" after {closed_after:.2f}s" if closed_after else ""))
        for sock in clients:
            sock.close()
        assert left == 0
        wait_until(lambda: closes() == len(clients), 5, "closed as slow consumers (4000)")
        assert growth < 24 * 1024


# -- 5: presence behind authorization -----------------------------------------------------


def test_presence_is_refused_outside_the_token_s_channels():
    """A token whose ``channels`` claim is ``["room-*"]`` gets ``forbidden`` for the
    members of ``private-ops``, as for subscribe and history there; it used to get the
    member list."""
    with ServerThread(Settings(jwt_secret=SECRET)) as server:
        ops = Client(server.ws_url, None, token=token("ops"))
        guest = Client(server.ws_url, None, token=token("guest", channels=["room-*"]))
        try:
            ops.ok("subscribe", channel="private-ops")
            ops.ok("subscribe", channel="room-1")
            assert guest.ok("presence", channel="room-1")["clients"] == ["ops"]
            answers = {kind: guest.request(kind, channel="private-ops").get("code")
                       for kind in ("presence", "subscribe", "history")}
            print(f"\npresence outside the token's channels: {answers}")
            assert answers == dict.fromkeys(answers, "forbidden")
        finally:
            for client in (ops, guest):
                client.close()


# -- also: the smaller holes ---------------------------------------------------------------


def test_a_frame_of_a_thousand_nested_arrays_is_a_bad_frame():
    """2 KB of ``[[[…]]]`` used to raise RecursionError in the decoder: the session
    ended with 1011 and an ERROR traceback. Now it is ``bad_frame`` and the session
    goes on."""
    with ServerProcess() as server:
        client = Client(server.ws_url, "nester")
        try:
            for nested in ("[" * 1000 + "]" * 1000,
                           '{"type":"ping","id":1,"x":' + "[" * 1000 + "]" * 1000 + "}"):
                client.send(nested)
                reply = client.recv()
                assert (reply["type"], reply.get("code")) == ("error", "bad_frame"), reply
            assert client.ok("ping")
        finally:
            client.close()
        log = server.log()
    print(f"\nnested frames: answered bad_frame; ERROR lines in the log: {log.count('ERROR')}")
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]


def test_the_chat_page_is_served_only_with_its_security_headers():
    """``/static/index.html`` was the page without its CSP (frame-ancestors), nosniff or
    referrer policy, cached for 12 h; now it leads to ``/``, which has them."""
    import urllib.request

    with ServerThread(Settings()) as server:
        for path in ("/", "/static/index.html"):
            with urllib.request.urlopen(f"{server.url}{path}", timeout=5) as response:
                headers, final = response.headers, response.url
            print(f"\n{path} -> {final}: {headers.get('Content-Security-Policy')!r}")
            assert final == f"{server.url}/"
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["Cache-Control"] == "no-cache"


def test_allowed_origins_match_as_browsers_send_them():
    """An origin listed as ``https://Chat.Example.com`` admits the page a browser calls
    ``https://chat.example.com`` (scheme and host case, default port); look-alikes and
    other ports are still refused."""
    import websocket

    allowed = ("https://Chat.Example.com", "http://localhost:3000/")
    with ServerThread(Settings(allowed_origins=allowed)) as server:
        def status(origin: str) -> int:
            try:
                websocket.create_connection(f"{server.ws_url}?client_id=a", timeout=5,
                                            origin=origin).close()
            except websocket.WebSocketBadStatusException as exc:
                return int(exc.status_code)
            return 101

        answers = {origin: status(origin) for origin in (
            "https://chat.example.com", "HTTPS://CHAT.EXAMPLE.COM:443",
            "http://localhost:3000", "https://chat.example.com.evil.net",
            "https://user@chat.example.com", "http://chat.example.com",
            "http://localhost:30001", "null")}
        print(f"\norigins: {answers}")
        assert [o for o, code in answers.items() if code == 101] == [
            "https://chat.example.com", "HTTPS://CHAT.EXAMPLE.COM:443", "http://localhost:3000"]
        assert set(answers.values()) == {101, 403}


@pytest.mark.redis
def test_history_with_a_malformed_before_is_a_bad_frame(redis_url):
    """``before`` is a message id; ``-1`` used to reach Redis as a stream id and come
    back as ``unavailable`` ("Redis unreachable"), telling the client to retry."""
    env = {"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_PLUGINS": "plugins.redis_history",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with ServerProcess(env) as server:
        client = Client(server.ws_url, "pager")
        try:
            client.ok("subscribe", channel="room")
            mid = client.ok("publish", channel="room", text="hello")["mid"]
            codes = {before: client.request("history", channel="room", before=before).get(
                "code") for before in ("-1", "zz", "0000000000001", mid.upper())}
            print(f"\nhistory with a malformed before: {codes}")
            assert codes == dict.fromkeys(codes, "bad_frame")
            assert client.ok("history", channel="room", before=mid)["messages"] == []
        finally:
            client.close()


async def simultaneous_handshakes(ports: list[int], client_id: str, count: int) -> list[int]:
    """``count`` WebSocket handshakes for one client id at once, spread over ``ports``,
    every socket held open until all are answered: their HTTP statuses."""
    import asyncio
    import base64

    async def handshake(port: int) -> tuple[int, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws?client_id={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        status_line = await asyncio.wait_for(reader.readline(), 30)
        return int(status_line.split()[1]), writer

    answered = await asyncio.gather(*(handshake(ports[n % len(ports)]) for n in range(count)))
    for _, writer in answered:
        writer.close()
    return [status for status, _ in answered]


@pytest.mark.redis
def test_the_connection_cap_holds_against_simultaneous_handshakes(redis_url):
    """300 handshakes of one client id at once, on two processes sharing Redis, cap 16:
    exactly 16 are admitted (the slot is reserved atomically before accepting), and
    every slot is free again once they leave. Counting, then accepting, admitted 54 of
    1,000 against 16."""
    import asyncio

    env = {"QUART_CHAT_REDIS_URL": redis_url}
    with ServerProcess(env) as one, ServerProcess(env) as two:
        statuses = asyncio.run(simultaneous_handshakes([one.port, two.port], "crowd", 300))
        admitted = statuses.count(101)
        print(f"\nsimultaneous handshakes, cap 16: {admitted} admitted, "
              f"{statuses.count(429)} refused with 429")
        assert admitted == 16
        assert statuses.count(429) == 300 - 16
        wait_until(lambda: health(one.url)["sessions"] + health(two.url)["sessions"] == 0,
                   10, "every admitted session ended")
        assert [leave_mid_request(one.port, "crowd") for _ in range(16)] == [101] * 16
