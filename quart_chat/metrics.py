"""Prometheus metrics: what the server counts, and ``GET /metrics``.

The metrics are module-level objects in prometheus-client's default registry, the way
prometheus-client expects them: core code calls the small functions below (one line at
each point that counts something), and the cost per call is one lock and an add.

The per-delivery hot path stays cheap: a broker message delivered to *n* local sessions
is counted once with ``inc(n)``, and queue depths are sampled by a background task
(:func:`sample_forever`) instead of measured on every put.

Several worker processes (``quart-chat serve --workers N``) use prometheus-client's
multiprocess mode: each worker writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and whichever worker answers ``/metrics`` adds them all up
(gauges per their ``multiprocess_mode``). ``serve`` creates and removes a temporary
folder when the variable is unset; it must be set before ``prometheus_client`` is
imported, which is why the supervisor sets it before it starts the workers.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .protocol import ClientFrame

if TYPE_CHECKING:
    from .service import ChatService

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between samples of the outbound queues.
SAMPLE_INTERVAL = 1.0

CONNECTIONS_OPEN = Gauge(
    "quart_chat_connections_open", "WebSocket sessions open now.", multiprocess_mode="livesum"
)
CONNECTIONS = Counter("quart_chat_connections", "WebSocket sessions accepted.")
SUBSCRIPTIONS = Gauge(
    "quart_chat_subscriptions", "Session-channel subscriptions now.", multiprocess_mode="livesum"
)
CHANNELS = Gauge(
    "quart_chat_channels_local",
    "Channels with at least one local subscriber (summed over workers).",
    multiprocess_mode="livesum",
)
FRAMES_IN = Counter("quart_chat_frames_in", "Frames received, by type.", ["type"])
FRAMES_OUT = Counter(
    "quart_chat_frames_out", "Frames queued for clients, by type (before coalescing).", ["type"]
)
PUBLISHED = Counter("quart_chat_messages_published", "Messages accepted and published.")
DELIVERED = Counter(
    "quart_chat_messages_delivered", "Messages queued for local subscribers (one per session)."
)
ERRORS = Counter("quart_chat_errors", "Error frames sent, by code.", ["code"])
SLOW_CONSUMERS = Counter(
    "quart_chat_slow_consumer_disconnects", "Sessions closed because their queue was full."
)
QUEUE_DEPTH_MAX = Gauge(
    "quart_chat_outbound_queue_depth_max",
    "Longest outbound queue at the last sample (frames).",
    multiprocess_mode="livemax",
)
QUEUED = Gauge(
    "quart_chat_outbound_queued_frames",
    "Frames waiting in all outbound queues at the last sample.",
    multiprocess_mode="livesum",
)
QUEUE_BYTES_MAX = Gauge(
    "quart_chat_outbound_queue_bytes_max",
    "Largest outbound queue at the last sample (bytes of JSON text).",
    multiprocess_mode="livemax",
)
QUEUED_BYTES = Gauge(
    "quart_chat_outbound_queued_bytes",
    "Bytes of JSON text waiting in all outbound queues at the last sample.",
    multiprocess_mode="livesum",
)
REDIS_RECONNECTS = Counter(
    "quart_chat_redis_reconnects", "Times the Redis pub/sub connection was re-established."
)
REDIS_PUBSUB_UP = Gauge(
    "quart_chat_redis_pubsub_up",
    "1 while the Redis pub/sub connection is live (probe answered), else 0; "
    "the minimum over workers. Always 0 with the embedded broker.",
    multiprocess_mode="livemin",
)
HOOK_CALLS = Counter("quart_chat_plugin_hook_calls", "Plugin hook calls.", ["plugin", "hook"])
HOOK_FAILURES = Counter(
    "quart_chat_plugin_hook_failures", "Plugin hook calls that raised.", ["plugin", "hook"]
)
HOOK_TIMEOUTS = Counter(
    "quart_chat_plugin_hook_timeouts", "Plugin hook calls that timed out.", ["plugin", "hook"]
)
HOOK_SECONDS = Histogram(
    "quart_chat_plugin_hook_seconds",
    "Time spent in one plugin hook call.",
    ["plugin", "hook"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# Children bound once, so counting a frame is a dict lookup and an add.
_IN = {frame: FRAMES_IN.labels(frame.__struct_config__.tag)
       for frame in ClientFrame.__args__}
_IN_INVALID = FRAMES_IN.labels("invalid")
_OUT_MESSAGE = FRAMES_OUT.labels("message")
_OUT_RESULT = FRAMES_OUT.labels("result")
_OUT_ERROR = FRAMES_OUT.labels("error")
_OUT_WELCOME = FRAMES_OUT.labels("welcome")
_OUT_GAP = FRAMES_OUT.labels("gap")


# -- sessions ---------------------------------------------------------------------------


def session_opened() -> None:
    CONNECTIONS.inc()
    CONNECTIONS_OPEN.inc()
    _OUT_WELCOME.inc()


def session_closed() -> None:
    CONNECTIONS_OPEN.dec()


def slow_consumer() -> None:
    SLOW_CONSUMERS.inc()


def frame_in(frame: ClientFrame | None) -> None:
    """One inbound frame (None: one that could not be decoded)."""
    (_IN_INVALID if frame is None else _IN[type(frame)]).inc()


def result_sent() -> None:
    _OUT_RESULT.inc()


def error_sent(code: str) -> None:
    _OUT_ERROR.inc()
    ERRORS.labels(code).inc()


# -- hub and broker ---------------------------------------------------------------------


def subscribed(first_local: bool) -> None:
    SUBSCRIPTIONS.inc()
    if first_local:
        CHANNELS.inc()


def unsubscribed(last_local: bool) -> None:
    SUBSCRIPTIONS.dec()
    if last_local:
        CHANNELS.dec()


def published() -> None:
    PUBLISHED.inc()


def delivered(sessions: int) -> None:
    """One broker message queued for ``sessions`` local subscribers."""
    DELIVERED.inc(sessions)
    _OUT_MESSAGE.inc(sessions)


def gap_sent(sessions: int) -> None:
    _OUT_GAP.inc(sessions)


def redis_reconnected() -> None:
    REDIS_RECONNECTS.inc()


def redis_pubsub_up(up: bool) -> None:
    REDIS_PUBSUB_UP.set(1 if up else 0)


# -- plugins ----------------------------------------------------------------------------


_hook_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def hook_called(plugin: str, hook: str, seconds: float, outcome: str | None) -> None:
    """One hook call; ``outcome`` is None (returned), ``"failed"`` or ``"timeout"``."""
    children = _hook_children.get((plugin, hook))
    if children is None:
        children = _hook_children[plugin, hook] = (
            HOOK_CALLS.labels(plugin, hook), HOOK_SECONDS.labels(plugin, hook))
    children[0].inc()
    children[1].observe(seconds)
    if outcome == "failed":
        HOOK_FAILURES.labels(plugin, hook).inc()
    elif outcome == "timeout":
        HOOK_TIMEOUTS.labels(plugin, hook).inc()


# -- sampling and exposition ------------------------------------------------------------


def sample(service: ChatService) -> None:
    """Record the outbound queue depths and sizes of this process's sessions."""
    sessions = tuple(service.sessions)
    depths = [session.queue_depth for session in sessions]
    QUEUE_DEPTH_MAX.set(max(depths, default=0))
    QUEUED.set(sum(depths))
    sizes = [session.queue_bytes for session in sessions]
    QUEUE_BYTES_MAX.set(max(sizes, default=0))
    QUEUED_BYTES.set(sum(sizes))


async def sample_forever(service: ChatService, interval: float = SAMPLE_INTERVAL) -> None:
    """Sample queue depths every ``interval`` seconds until cancelled."""
    while True:
        sample(service)
        await asyncio.sleep(interval)


def multiprocess() -> bool:
    """True when metrics are collected across worker processes."""
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition(service: ChatService | None = None) -> tuple[bytes, str]:
    """The text format of every metric, and its content type.

    In multiprocess mode the values of all workers are read from their files; otherwise
    this process's default registry (which adds process and Python metrics).
    """
    if service is not None:
        sample(service)  # the answering worker's queues are never stale
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """Drop a dead worker's ``live*`` gauge files (called by the supervisor)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
