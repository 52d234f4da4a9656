"""Frames are decoded at the edge: every bad input maps to the protocol's error code."""

from __future__ import annotations

import pytest

from quart_chat import protocol
from quart_chat.protocol import FrameError, Message, Publish, Subscribe, Unsubscribe

LIMIT = 1024


def decode_error(data: str | bytes | None) -> FrameError:
    with pytest.raises(FrameError) as info:
        protocol.decode(data, LIMIT)
    return info.value


def test_decodes_each_frame_type_into_its_struct():
    """Valid frames become typed values with their request id."""
    frame = protocol.decode('{"type":"publish","channel":"a","text":"hi","id":"x"}', LIMIT)
    assert frame == Publish(channel="a", text="hi", id="x")
    assert protocol.decode('{"type":"unsubscribe"}', LIMIT) == Unsubscribe()
    assert protocol.decode('{"type":"subscribe","channel":"c","extra":1}', LIMIT) == Subscribe(
        channel="c"
    )


@pytest.mark.parametrize(
    ("data", "code", "request_id"),
    [
        ("not json", "bad_frame", None),
        ("[1, 2]", "bad_frame", None),
        ('"text"', "bad_frame", None),
        ("{}", "bad_frame", None),
        ('{"type": 3, "id": 1}', "bad_frame", 1),
        ('{"type": "dance", "id": "q"}', "unknown_type", "q"),
        ('{"type": "subscribe", "id": 2}', "bad_frame", 2),
        ('{"type": "publish", "channel": "a", "text": 5, "id": 3}', "bad_frame", 3),
        ('{"type": "ping", "id": true}', "bad_frame", None),
        ('{"type": "ping", "id": [1]}', "bad_frame", None),
        ('{"type": "history", "channel": "a", "limit": "5", "id": 4}', "bad_frame", 4),
        (None, "bad_frame", None),
        (b"\x00binary", "bad_frame", None),
    ],
)
def test_bad_frames_get_their_error_code_and_keep_the_id(data, code, request_id):
    """Malformed JSON, arrays, wrong types, unknown types, binary: each a clear error."""
    error = decode_error(data)
    assert error.error.code == code
    assert error.request_id == request_id
    assert str(error.error)


def test_frame_size_is_counted_in_utf8_bytes_not_characters():
    """300 four-byte characters are 1200 bytes: over a 1024-byte limit."""
    text = "😀" * 300
    frame = f'{{"type":"publish","channel":"a","text":"{text}","id":7}}'
    assert len(frame) < LIMIT
    error = decode_error(frame)
    assert (error.error.code, error.request_id) == ("too_large", 7)
    ascii_frame = '{"type":"publish","channel":"a","text":"' + "a" * 900 + '"}'
    assert isinstance(protocol.decode(ascii_frame, LIMIT), Publish)


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "é", "a/b", "a*"])
def test_invalid_channel_names_are_refused(name):
    with pytest.raises(protocol.InvalidChannel):
        protocol.check_channel(name)


@pytest.mark.parametrize("name", ["a", "x" * 128, "room:42", "a.b-c_d"])
def test_valid_channel_names_pass(name):
    assert protocol.check_channel(name) == name


def test_client_id_rules():
    assert protocol.is_valid_client_id("alice.b-c_1")
    assert not protocol.is_valid_client_id("")
    assert not protocol.is_valid_client_id("x" * 65)
    assert not protocol.is_valid_client_id("al ice")


def test_message_round_trips_and_replace_makes_a_copy():
    """The wire form is the documented ``message`` frame; ``bot`` appears only when true."""
    message = Message(channel="c", sender="s", text="t", ts=1.5, mid="m")
    encoded = protocol.encode_message(message)
    assert encoded == b'{"type":"message","channel":"c","sender":"s","text":"t","ts":1.5,"mid":"m"}'
    assert protocol.decode_message(encoded) == message
    changed = message.replace(text="T", bot=True)
    assert (message.text, changed.text, changed.bot) == ("t", "T", True)
    assert b'"bot":true' in protocol.encode_message(changed)


def test_mids_sort_by_time():
    assert protocol.new_mid(1.0) < protocol.new_mid(2.0)
    assert len({protocol.new_mid(1.0) for _ in range(100)}) == 100


def test_each_wire_code_decodes_to_the_error_class_that_declares_it():
    """A client decoding ``internal`` gets the generic internal error, not HookFailed,
    a server-side subclass that inherits the code."""
    from quart_chat import errors
    from quart_chat.hooks import HookFailed

    assert issubclass(HookFailed, errors.InternalError)
    assert type(errors.ChatError.from_code("internal", "x")) is errors.InternalError
    assert type(errors.ChatError.from_code("forbidden", "x")) is errors.Forbidden
    unknown = errors.ChatError.from_code("from_the_future", "x")
    assert (type(unknown), unknown.code) == (errors.ChatError, "from_the_future")
