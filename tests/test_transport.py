"""The transport under abuse (issue 13.2, 13.4 and the close codes of its "Also" list):
what hypercorn reads is bounded, floods are closed where the bytes arrive, and every
close is logged with what really happened. Real server processes, raw sockets."""

from __future__ import annotations

import contextlib
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from .asgi_servers import Served
from .helpers import raw_handshake, read_close_code, wait_until
from .wsclient import Client
from .wsframes import CONTINUATION, PING, TEXT, frame, header

CHUNK = b"a" * (64 * 1024)
TERABYTE = 1 << 40


@pytest.fixture
def hypercorn() -> Iterator[Served]:
    with Served("hypercorn") as server:
        yield server


def _stream(sock: socket.socket, chunks: Iterator[bytes], budget: int,
            seconds: float) -> int:
    """Send chunks until the server drops us, ``budget`` bytes or ``seconds`` pass; the
    bytes sent."""
    sock.settimeout(1.0)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        for chunk in chunks:
            if sent >= budget or time.monotonic() > deadline:
                break
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset, broken pipe, or no room for 1 s: the server stopped reading
        pass
    return sent


def _endless(first: bytes, then: bytes) -> Iterator[bytes]:
    yield first
    while True:
        yield then


@pytest.mark.parametrize("shape", ["one 1 TB frame", "64 KB fragments"])
def test_an_oversized_message_closes_1009_and_nothing_more_is_read(hypercorn, shape):
    """Before: 1009 sent, then hypercorn went on reading and buffering (+1.05 GB in 4 s for
    one client sending 1 GB), and the close was logged as 1000 'client closed'."""
    if shape == "one 1 TB frame":
        chunks = _endless(header(TEXT, TERABYTE) + CHUNK, CHUNK)
    else:
        chunks = _endless(frame(TEXT, CHUNK, fin=False), frame(CONTINUATION, CHUNK, fin=False))
    sock, status, _ = raw_handshake(hypercorn.port, "client_id=whale")
    assert status == 101
    time.sleep(0.3)
    before = hypercorn.rss_kib()
    sent = _stream(sock, chunks, budget=300 * 1024 * 1024, seconds=8)
    growth = hypercorn.rss_kib() - before
    sock.close()
    print(f"\n{shape}: {sent / 1e6:.1f} MB accepted before the drop; server RSS growth "
          f"{growth} KiB")
    assert sent < 32 * 1024 * 1024, "the server kept reading after its 1009"
    assert growth < 32 * 1024
    wait_until(lambda: re.search(r"client_id=whale .*close_code=1009", hypercorn.log()), 10,
               "the 1009 in the log")


def test_the_1009_reaches_the_client_before_the_drop(hypercorn):
    sock, status, _ = raw_handshake(hypercorn.port, "client_id=whale")
    assert status == 101
    read_close = threading.Thread(target=lambda: codes.append(read_close_code(sock, 10)))
    codes: list[int | None] = []
    read_close.start()
    _stream(sock, _endless(header(TEXT, TERABYTE), CHUNK), budget=8 * 1024 * 1024, seconds=5)
    read_close.join(10)
    sock.close()
    assert codes == [1009]


def _drain(sock: socket.socket, codes: list[int | None]) -> None:
    """Read and drop everything until EOF; note whether a close frame (0x88) was seen."""
    seen = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(1 << 20):
            seen = (seen + chunk)[-4096:]
    codes.append(1008 if b"\x88" in seen else None)


def _ping_p50(client: Client, count: int = 40) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.ok("ping")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.mark.parametrize("flood", ["empty continuation frames", "ping frames"])
def test_a_frame_flood_is_closed_and_others_latency_stays_flat(hypercorn, flood):
    """Before: an unfinished text frame and endless empty continuation frames (213,000
    frames/s) raised another client's ping p50 from 0.8 ms to 1.2 s; those frames
    bypassed frame_rate and max_bad_frames and kept the session counted as alive."""
    bystander = Client(hypercorn.ws_url, "bystander")
    normal = _ping_p50(bystander)
    if flood == "ping frames":
        burst = frame(PING) * 4096
        first = burst
    else:
        burst = frame(CONTINUATION, fin=False) * 4096
        first = frame(TEXT, b"{", fin=False) + burst
    stop = threading.Event()
    codes: list[int | None] = []
    floods = 0

    def flooder() -> None:
        nonlocal floods
        while not stop.is_set():  # reconnect after every drop: the flood keeps running
            sock, status, _ = raw_handshake(hypercorn.port, "client_id=flooder")
            if status != 101:
                sock.close()
                continue
            floods += 1
            # read while flooding (pongs included), so TCP does not hold the flood back
            reader = threading.Thread(target=_drain, args=(sock, codes))
            reader.start()
            _stream(sock, _endless(first, burst), budget=64 * 1024 * 1024, seconds=2)
            reader.join(6)
            sock.close()

    thread = threading.Thread(target=flooder)
    thread.start()
    try:
        time.sleep(0.3)
        during = _ping_p50(bystander)
    finally:
        stop.set()
        thread.join(15)
    bystander.close()
    print(f"\n{flood}: bystander ping p50 {normal * 1000:.2f} ms before, "
          f"{during * 1000:.2f} ms during ({floods} flooding connections, a close frame "
          f"seen on {codes.count(1008)})")
    assert floods >= 1
    assert during < normal + 0.015
    wait_until(lambda: re.search(r"client_id=flooder .*close_code=1008", hypercorn.log()), 10,
               "the 1008 in the log")


@pytest.mark.parametrize(("bad", "code"), [
    (frame(TEXT, b'{"type":"ping","x":"\xff\xfe"}'), 1007),  # invalid UTF-8
    (bytes([0x83, 0x80]) + b"\0\0\0\0", 1002),  # a reserved opcode
    (bytes([0x81, 0x05]) + b"hello", 1002),  # an unmasked client frame
])
def test_malformed_frames_get_their_close_code_and_are_logged_so(hypercorn, bad, code):
    """Before: the TCP connection was dropped without a close frame, logged as 1000."""
    sock, status, _ = raw_handshake(hypercorn.port, "client_id=garbler")
    assert status == 101
    sock.sendall(bad)
    assert read_close_code(sock, 5) == code
    sock.close()
    wait_until(lambda: re.search(rf"client_id=garbler .*close_code={code}", hypercorn.log()),
               10, f"the {code} in the log")


def test_a_connection_over_the_byte_rate_is_closed():
    with Served("hypercorn", {"QUART_CHAT_TRANSPORT_BYTE_RATE": "65536",
                              "QUART_CHAT_MAX_FRAME_BYTES": "65536"}) as server:
        sock, status, _ = raw_handshake(server.port, "client_id=hose")
        assert status == 101
        ping = frame(TEXT, b'{"type":"ping","id":"' + b"x" * 60_000 + b'"}')
        sent = _stream(sock, _endless(ping, ping), budget=64 * 1024 * 1024, seconds=5)
        sock.close()
        assert sent < 16 * 1024 * 1024  # the burst, then the kernel's buffers
        wait_until(lambda: re.search(r"client_id=hose .*close_code=1008 reason='more than "
                                     r"65536 bytes per second'", server.log()), 10, "the 1008")
