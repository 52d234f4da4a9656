"""Recovery's ordering for one session: live frames held back while missed messages are
read, and replayed messages whose live frames may still arrive late.

A ``subscribe`` with ``since`` joins the channel before it reads the missed messages,
so nothing falls between the stored messages and the live stream; the live frames that
arrive meanwhile are held here. A message is stored after the broker accepted it, so
its live frame can still be on its way through Redis when the replay is read: such late
frames are dropped, until a frame made after the replay (by its ``mid`` time, plus clock
slack) shows none can follow and this process's own clock has also passed the slack (so a
process whose clock runs ahead cannot end the watch early). Every replayed mid stays
watched until then, held ones included: a message's live frame can come twice (redis-py
resends a PUBLISH whose reply timed out), and the second copy must not follow its replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import msgspec

from . import protocol
from .protocol import Message

#: Seconds of clock difference between server processes tolerated when a live frame's
#: ``mid`` time tells whether a recovery's late frames can still come, and seconds (on
#: this process's clock) those frames are watched for at least.
REPLAY_CLOCK_SLACK = 2.0


class Recovery:
    """The recoveries of one session; :meth:`intercepts` sees every frame it is sent.

    ``max_held`` live frames may wait per channel; one more calls ``overflow`` (the
    session closes as a slow consumer).
    """

    def __init__(self, max_held: int, overflow: Callable[[], None]) -> None:
        self._max_held = max_held
        self._overflow = overflow
        # channel -> live frames (mid, frame) held back while missed messages are read
        self._held: dict[str, list[tuple[str | None, str]]] = {}
        # channel -> (mids replayed, the mid prefix past which their live frames cannot
        # come any more, the monotonic time before which they are watched in any case)
        self._replayed: dict[str, tuple[set[str], str, float]] = {}

    def hold(self, channel: str) -> None:
        """Hold ``channel``'s live frames from now until :meth:`release`."""
        self._held[channel] = []

    def abandon(self, channel: str) -> None:
        """The subscription failed: forget what was held."""
        self._held.pop(channel, None)

    def forget(self, channel: str) -> None:
        """The session left ``channel``: stop waiting for its late frames."""
        self._replayed.pop(channel, None)

    def release(
        self, channel: str, replay: Sequence[Message], read_at: float,
        deliver: Callable[[str], None],
    ) -> None:
        """Queue ``replay`` (read at ``read_at``), then the held live frames not among it.

        Replayed messages are remembered, so their live frames (late ones, or second
        copies of held ones) are dropped when they come.
        """
        frames = [protocol.encode_message(m).decode() for m in replay]
        held = self._held.pop(channel, [])
        seen = {m.mid for m in replay}
        for frame in frames:
            deliver(frame)
        for mid, frame in held:
            if mid is None or mid not in seen:
                deliver(frame)
        if seen:
            self._replayed[channel] = (seen, protocol.new_mid(read_at + REPLAY_CLOCK_SLACK)[:12],
                                       time.monotonic() + REPLAY_CLOCK_SLACK)

    def intercepts(self, frame: str) -> bool:
        """True when ``frame`` is held back or dropped as already replayed."""
        if self._held and self._hold(frame):
            return True
        return bool(self._replayed) and self._replayed_already(frame)

    def _hold(self, frame: str) -> bool:
        channel, mid = _channel_and_mid(frame)
        held = self._held.get(channel) if channel is not None else None
        if held is None:
            return False
        if len(held) >= self._max_held:
            self._overflow()
        else:
            held.append((mid, frame))
        return True

    def _replayed_already(self, frame: str) -> bool:
        channel, mid = _channel_and_mid(frame)
        if channel is None or mid is None:
            return False
        pending = self._replayed.get(channel)
        if pending is None:
            return False
        replayed, horizon, watched_until = pending
        if mid in replayed:  # kept in the set: a second copy may still follow
            return True
        if mid[:12] > horizon and time.monotonic() > watched_until:  # the late ones are past
            del self._replayed[channel]
        return False


def _channel_and_mid(frame: str) -> tuple[str | None, str | None]:
    """The ``channel`` and ``mid`` of an encoded frame (None where it has none)."""
    try:
        value = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    channel, mid = value.get("channel"), value.get("mid")
    return (channel if isinstance(channel, str) else None,
            mid if isinstance(mid, str) else None)
