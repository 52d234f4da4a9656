"""Ending tasks for sure: a cancellation can be swallowed, so ask until the task ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

log = logging.getLogger("quart_chat")

#: Seconds :func:`cancel_and_wait` keeps cancelling before it gives up and logs.
STOP_BOUND = 5.0


async def cancel_and_wait(
    tasks: Collection[asyncio.Future[Any]], *, bound: float = STOP_BOUND, what: str = "tasks"
) -> bool:
    """Cancel ``tasks`` and wait until they have ended, cancelling again while one runs.

    A single ``cancel()`` is not enough: on Python 3.11 ``asyncio.wait_for`` (used here
    and inside redis-py) swallows a cancellation that lands just as its inner call
    completes, so a reconnect loop, or a session's receive loop back at ``receive()``,
    carries on for good. Gives up after ``bound`` seconds, logging ``what`` is left
    running, and returns False; True once every task has ended.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
        if pending and loop.time() > deadline:
            log.error("%s still running after %.1fs: %s", what, bound,
                      sorted(getattr(task, "get_name", task.__repr__)() for task in pending))
            return False
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s: %r ended with %r", what, task, task.exception())
    return True
