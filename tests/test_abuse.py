"""Limits under abuse: byte-sized frames, clients that stop reading, flood, or play dead.

Each test asserts a number (time to disconnect, memory growth, latency of the others)
and prints it, so ``pytest -s`` shows the measured figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest
import websocket
import websockets

from quart_chat.config import Settings
from quart_chat.testing import ServerProcess, ServerThread, free_port, wait_for_health

from .helpers import (
    Collector,
    health,
    raw_handshake,
    read_close_code,
    rss_kib,
    wait_until,
    ws_frame,
)
from .wsclient import Client


@pytest.fixture
def loose(settings: Settings) -> Settings:
    """The broker-parametrized settings with the publish limits out of the way."""
    return settings.replace(publish_rate=100_000, publish_burst=100_000, frame_rate=100_000,
                            max_text_length=10_000)


def session_of(server: ServerThread, client_id: str):
    return next((s for s in server.service.sessions if s.client_id == client_id), None)


def test_frame_size_is_counted_in_utf8_bytes_not_characters():
    """A frame under the limit in characters but over it in bytes gets ``too_large``."""
    with ServerThread(Settings(max_frame_bytes=1024, max_text_length=1000)) as server:
        client = Client(server.ws_url, "alice")
        client.ok("subscribe", channel="lobby")
        fits = {"type": "publish", "id": 1, "channel": "lobby", "text": "€" * 300}
        too_big = {"type": "publish", "id": 2, "channel": "lobby", "text": "€" * 400}
        fits_text = json.dumps(fits, ensure_ascii=False)
        big_text = json.dumps(too_big, ensure_ascii=False)
        assert len(fits_text.encode()) < 1024
        assert len(big_text) < 1024 < len(big_text.encode())  # chars fit, bytes do not
        client.send(fits_text)
        assert client.reply(1)["ok"] is True
        client.send(big_text)
        reply = client.reply(2)
        assert reply["type"] == "error" and reply["code"] == "too_large", reply
        client.ok("ping")  # the connection stays open
        client.close()


#: How far the publisher may run ahead of its readers (well inside their outbound queues).
READER_WINDOW = 64


def test_a_client_that_stops_reading_is_closed_and_the_others_keep_receiving(broker, request):
    """Slow consumer: closed with 4000 once its queue is full, memory bounded, and the
    others receive everything meanwhile. Pings are off, so nothing but the full queue can
    end the slow session: a fan-out that waited on its socket would stall the reader for
    good and fail the test. The latencies are printed, not asserted (see bench/)."""
    env = {"QUART_CHAT_OUTBOUND_QUEUE": "256", "QUART_CHAT_PUBLISH_RATE": "100000",
           "QUART_CHAT_PUBLISH_BURST": "100000", "QUART_CHAT_FRAME_RATE": "100000",
           "QUART_CHAT_MAX_TEXT_LENGTH": "10000", "QUART_CHAT_PING_INTERVAL": "3600",
           "QUART_CHAT_PING_TIMEOUT": "3600"}
    if broker == "redis":
        env["QUART_CHAT_REDIS_URL"] = request.getfixturevalue("redis_url")
    # 4 KB messages: the kernel's send buffer (up to 4 MB) must fill before the queue does
    text = "x" * 4000
    total = 4000
    with ServerProcess(env) as server:
        sock, status, _ = raw_handshake(server.port, "client_id=sloth")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert status == 101
        sock.sendall(ws_frame(json.dumps({"type": "subscribe", "id": 1, "channel": "lobby"})))
        reader = Client(server.ws_url, "reader")
        reader.ok("subscribe", channel="lobby")
        publisher = Client(server.ws_url, "publisher")
        publisher.ok("subscribe", channel="lobby")  # publishing needs it
        assert health(server.url)["sessions"] == 3
        latencies: list[float] = []

        def read() -> None:
            for _ in range(total):
                message = reader.next()
                latencies.append(time.time() - message["ts"])

        drained: list[None] = []

        def drain() -> None:  # the publisher reads what it gets, like any polite client
            with contextlib.suppress(websocket.WebSocketException, OSError, ValueError):
                for _ in range(2 * total):  # its results and its own messages
                    if publisher.recv()["type"] == "message":
                        drained.append(None)

        threads = [threading.Thread(target=read, daemon=True),
                   threading.Thread(target=drain, daemon=True)]
        for thread in threads:
            thread.start()
        rss_before = rss_kib(server.pid)
        rss_peak = rss_before
        started = time.monotonic()
        closed_after = None
        for n in range(total):
            # The readers are Python threads on a busy machine: keep them well inside their
            # queues, so only the sloth is ever too slow.
            wait_until(lambda n=n: n - min(len(latencies), len(drained)) < READER_WINDOW, 60,
                       "the readers catching up")
            publisher.send({"type": "publish", "channel": "lobby", "text": text})
            if n % 5 == 0:
                time.sleep(0.01)  # a steady stream (~500/s, 2 MB/s), not one burst
                rss_peak = max(rss_peak, rss_kib(server.pid))
                if closed_after is None and health(server.url)["sessions"] == 2:
                    closed_after = time.monotonic() - started
        for thread in threads:
            thread.join(60)
        if closed_after is None:
            wait_until(lambda: health(server.url)["sessions"] == 2, 15, "slow consumer closed")
            closed_after = time.monotonic() - started
        close_code = read_close_code(sock)  # now it reads: what was it told?
        p50 = statistics.median(latencies)
        p99 = statistics.quantiles(latencies, n=100)[98]
        growth = rss_peak - rss_before
        print(f"\nslow consumer ({broker}) closed after {closed_after:.2f}s with {close_code}; "
              f"server RSS peak growth {growth} KiB; the others' latency p50 "
              f"{p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms; received {len(latencies)}/{total}")
        # The close frame sits behind 4 MB the client never read, so it may never arrive
        # (the server gives it 1 s); the server's access log says why it closed it.
        assert close_code in (4000, None)
        assert re.search(r"disconnect client_id=sloth .* close_code=4000 reason='slow consumer",
                         server.log()), server.log()[-2000:]
        assert len(latencies) == total  # nothing lost for the reader
        assert growth < 64 * 1024
        sock.close()
        reader.close()
        publisher.close()


def test_a_flooding_client_is_rate_limited_then_closed_with_1008():
    """Frames beyond ``frame_rate`` get ``rate_limited``; the client is then closed (1008)."""
    settings = Settings(frame_rate=100, max_bad_frames=20)
    with ServerThread(settings) as server:
        client = Client(server.ws_url, "flood")
        session = session_of(server, "flood")
        errors: list[str] = []
        original = session._fail
        session._fail = lambda request_id, exc: (errors.append(exc.code),
                                                 original(request_id, exc))
        rss_before = rss_kib()
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(websocket.WebSocketException, OSError):
            for _ in range(5_000):
                client.send({"type": "ping"})
                sent += 1
        wait_until(session.finished.is_set, 10, "flooder closed")
        elapsed = time.monotonic() - started
        growth = rss_kib() - rss_before
        print(f"\nflood: closed with {session.close_code} after {elapsed:.2f}s; {sent} frames "
              f"sent, {errors.count('rate_limited')} rate_limited errors; RSS growth "
              f"{growth} KiB")
        # (the client may see a reset instead of the close frame: it left unread frames)
        assert session.close_code == 1008
        assert 20 <= errors.count("rate_limited") <= 22
        assert growth < 64 * 1024
        client.close()
        wait_until(lambda: not server.service.sessions, 5, "flooder gone")


def test_publish_flood_gets_rate_limited_then_closed():
    """The publish token bucket answers ``rate_limited``; persisting gets a 1008 close."""
    settings = Settings(publish_rate=5, publish_burst=10, max_bad_frames=10)
    with ServerThread(settings) as server:
        client = Client(server.ws_url, "spammer")
        client.ok("subscribe", channel="lobby")
        replies = []
        try:
            for n in range(200):
                replies.append(client.request("publish", channel="lobby", text=f"spam {n}"))
        except (websocket.WebSocketException, OSError, ValueError):  # '' once closed
            pass
        codes = [r.get("code", "ok") for r in replies]
        print(f"\npublish flood: {codes.count('ok')} accepted, "
              f"{codes.count('rate_limited')} rate_limited before the close")
        assert 10 <= codes.count("ok") <= 15
        assert codes.count("rate_limited") >= 1
        assert len(replies) < 200  # closed long before the end
        wait_until(lambda: not server.service.sessions, 5, "spammer gone")
        client.close()


def test_a_peer_that_never_answers_pings_is_closed_within_the_configured_time():
    """A socket that neither sends frames nor pongs is closed (4001) after interval+timeout."""
    settings = Settings(ping_interval=0.5, ping_timeout=1.0)
    with ServerThread(settings) as server:

        done = threading.Event()

        async def live_client() -> None:
            # the websockets library answers pings by itself, like every browser
            async with websockets.connect(f"{server.ws_url}?client_id=alive") as ws:
                await ws.recv()
                await asyncio.to_thread(done.wait, 30)

        dead, status, _ = raw_handshake(server.port, "client_id=zombie")
        assert status == 101
        started = time.monotonic()
        thread = threading.Thread(target=asyncio.run, args=(live_client(),), daemon=True)
        thread.start()
        zombie = wait_until(lambda: session_of(server, "zombie"), 5, "zombie session")
        wait_until(zombie.finished.is_set, 10, "zombie closed")
        closed_after = time.monotonic() - started
        time.sleep(1.5)  # the live client idled for > interval + timeout too
        alive = session_of(server, "alive")
        print(f"\ndead peer closed after {closed_after:.2f}s (allowed 1.5s + checks) "
              f"with {zombie.close_code}")
        assert zombie.close_code == 4001
        assert closed_after >= 1.5  # not before interval + timeout
        assert alive is not None and not alive.finished.is_set()
        done.set()
        thread.join(5)
        dead.close()


def test_a_paused_process_does_not_close_its_live_peers():
    """The process stops running for longer than ping interval + timeout (a long garbage
    collection, a starved CPU): no ping went out meanwhile, so the peers' silence is not
    held against them, and a live client stays connected."""
    with ServerThread(Settings(ping_interval=0.5, ping_timeout=0.5)) as server:
        alive = Collector(server.ws_url, "alive")  # websocket-client answers pings
        try:
            session = wait_until(lambda: session_of(server, "alive"), 5, "session")
            server._loop.call_soon_threadsafe(time.sleep, 2.5)
            time.sleep(3.5)  # the pause, then more than one ping round
            assert alive.closed is None and not session.finished.is_set(), session.close_code
            alive.ok("ping")
        finally:
            alive.close()


def test_frame_rate_is_not_a_problem_for_normal_clients():
    """Within ``frame_rate`` nothing is refused: 150 requests in 2 s all succeed."""
    with ServerThread(Settings(frame_rate=100)) as server:
        client = Client(server.ws_url, "calm")
        for _ in range(150):
            client.ok("ping")
            time.sleep(0.012)
        client.close()



def test_dead_peers_are_closed_under_plain_hypercorn_too():
    """Run as ``hypercorn "quart_chat:create_app()"`` (no ping interval configured), the
    server pings by itself: a silent peer gets 4001, a live idle one stays."""
    port = free_port()
    env = {**os.environ, "QUART_CHAT_PING_INTERVAL": "0.5", "QUART_CHAT_PING_TIMEOUT": "1.0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "quart_chat:create_app()", "--bind",
         f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(f"http://127.0.0.1:{port}")

        async def scenario() -> tuple[float, int | None, bool]:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?client_id=alive") as ws:
                await ws.recv()
                dead, status, _ = await asyncio.to_thread(raw_handshake, port,
                                                          "client_id=zombie")
                assert status == 101
                started = time.monotonic()
                await asyncio.sleep(2.5)  # > interval + timeout for both of them
                code = await asyncio.to_thread(read_close_code, dead, 10)
                closed_after = time.monotonic() - started
                dead.close()
                pong = await ws.ping()
                await asyncio.wait_for(pong, 5)  # the idle live client is still served
                await ws.send('{"type":"ping","id":1}')
                alive = '"ok":true' in await ws.recv()
                return closed_after, code, alive

        closed_after, code, alive = asyncio.run(scenario())
        print(f"\nplain hypercorn: silent peer got {code} after {closed_after:.2f}s; the live "
              "idle client is kept")
        assert code == 4001
        assert alive
    finally:
        process.terminate()
        process.wait(15)
