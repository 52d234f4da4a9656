"""Hand-written client WebSocket frames, malformed ones included, for raw-socket probes.

Frames carry the mask bit with an all-zero key (valid: RFC 6455 only asks for a key), so
a payload can be streamed as it is, megabytes at a time, without masking it in Python.
"""

from __future__ import annotations

TEXT, CONTINUATION, BINARY, CLOSE, PING = 0x1, 0x0, 0x2, 0x8, 0x9
ZERO_MASK = b"\0\0\0\0"


def header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """The header of a masked client frame declaring ``length`` payload bytes."""
    first = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        return first + bytes([0x80 | length]) + ZERO_MASK
    if length < 1 << 16:
        return first + bytes([0x80 | 126]) + length.to_bytes(2, "big") + ZERO_MASK
    return first + bytes([0x80 | 127]) + length.to_bytes(8, "big") + ZERO_MASK


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A whole masked client frame."""
    return header(opcode, len(payload), fin=fin) + payload
