"""Issue 13, probed as an attacker would and kept as tests: sessions that always end,
an outbound queue bounded in bytes, presence behind authorization, and the smaller
holes (connection-cap race, nested frames, the static page, origins, ``before``).

Each test runs against a real server (and a real Redis where the hole was in Redis) and
prints the measured figure, so ``pytest -s`` shows it.
"""

from __future__ import annotations

import json
import threading
import time

import psutil
import pytest

from quart_chat.testing import RedisServer, ServerProcess

from .helpers import health, raw_handshake, wait_until, ws_frame

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
