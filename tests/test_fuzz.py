"""Fuzzing with hypothesis: thousands of generated frames, good and bad, thrown at the
decoder and at a live server. Zero crashes, zero unhandled exceptions, every frame
answered with a result or a typed error."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quart_chat import protocol
from quart_chat.config import Settings
from quart_chat.errors import ChatError
from quart_chat.protocol import FRAME_TYPES, FrameError
from quart_chat.testing import ServerThread

MAX_BYTES = 4096
FIELDS = ["id", "type", "channel", "text", "limit", "before", "since", "extra"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=40), st.sampled_from(["lobby", "a:b", "", " ", "x" * 129, "ünï", "\x00"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)
frame_dicts = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(sorted(FRAME_TYPES)), values)},
    optional={name: values for name in FIELDS if name != "type"},
)
raw_frames = st.one_of(
    frame_dicts.map(lambda d: json.dumps(d, allow_nan=True)),
    frame_dicts.map(lambda d: json.dumps(d)[: max(1, len(json.dumps(d)) // 2)]),  # truncated
    st.text(max_size=200),
    st.text(alphabet="{}[]\":,0123456789truefalsn \\", max_size=120),
    st.builds(lambda n, c: json.dumps({"type": "publish", "channel": "lobby", "text": c * n}),
              st.integers(0, 1300), st.sampled_from(["a", "é", "€", "😀"])),  # < 4x limit
)


@settings(max_examples=4000, deadline=None)
@given(data=st.one_of(raw_frames, st.binary(max_size=64), st.none()))
def test_the_decoder_answers_every_input_with_a_frame_or_a_typed_error(data: Any) -> None:
    """protocol.decode never raises anything but FrameError, whose error has a wire code."""
    try:
        frame = protocol.decode(data, MAX_BYTES)
    except FrameError as exc:
        assert isinstance(exc.error, ChatError)
        assert exc.error.code in {"bad_frame", "unknown_type", "too_large"}
        assert exc.request_id is None or isinstance(exc.request_id, (int, str))
        json.loads(protocol.error(exc.request_id, exc.error))  # always encodable
    else:
        assert type(frame).__struct_config__.tag in FRAME_TYPES


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[ServerThread]:
    loose = Settings(max_bad_frames=1_000_000, frame_rate=1_000_000, publish_rate=1_000_000,
                     publish_burst=1_000_000, max_frame_bytes=MAX_BYTES,
                     max_channels_per_session=1_000_000)
    with ServerThread(loose) as server:
        yield server


@pytest.fixture(scope="module")
def fuzz_client(fuzzed_server: ServerThread) -> Iterator[websocket.WebSocket]:
    ws = websocket.create_connection(f"{fuzzed_server.ws_url}?client_id=fuzzer", timeout=10)
    json.loads(ws.recv())
    yield ws
    ws.close()


class ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server_errors() -> Iterator[list[logging.LogRecord]]:
    counter = ErrorCounter()
    logging.getLogger().addHandler(counter)
    yield counter.records
    logging.getLogger().removeHandler(counter)


SENT = {"frames": 0}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(st.one_of(raw_frames, st.binary(min_size=1, max_size=64)),
                      min_size=20, max_size=60))
def test_a_live_server_survives_generated_frames(fuzzed_server, fuzz_client, server_errors,
                                                 batch):
    """Every frame gets exactly one reply (result or typed error); the socket stays open."""
    ws = fuzz_client
    for data in batch:
        if isinstance(data, bytes):
            ws.send_binary(data)
        else:
            ws.send(data)
    ws.send(json.dumps({"type": "ping", "id": "fence"}))
    replies = 0
    while True:
        frame = json.loads(ws.recv())
        if frame.get("id") == "fence" and frame["type"] == "result":
            break
        if frame["type"] == "error":
            assert frame["code"] != "internal", frame
        if frame["type"] in ("result", "error"):
            replies += 1
    SENT["frames"] += len(batch)
    assert replies == len(batch)
    assert server_errors == [], [r.getMessage() for r in server_errors]
    assert len(fuzzed_server.service.sessions) == 1


def test_the_fuzzing_reached_thousands_of_live_frames(fuzzed_server, server_errors):
    """(runs after the live fuzz) thousands of frames went through, nothing was logged."""
    print(f"\nfuzz: {SENT['frames']} generated frames sent to the live server, "
          f"{len(server_errors)} errors logged")
    assert SENT["frames"] >= 1000
    assert server_errors == []
