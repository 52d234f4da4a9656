"""Token buckets: the publish rate, the tolerance for bad frames, the transport rates."""

from __future__ import annotations

import time


class TokenBucket:
    """Allows ``burst`` events at once and ``rate`` per second sustained."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self, count: float = 1.0) -> bool:
        """Spend ``count`` tokens (one event, or that many bytes); False when the bucket
        holds fewer."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= count:
            self._tokens -= count
            return True
        return False
