"""The pieces every Redis-backed broker shares (quart_chat.backends.base)."""

from __future__ import annotations

import asyncio

from quart_chat.backends.base import cancel_and_wait


def test_cancel_and_wait_ends_a_task_that_swallowed_one_cancellation():
    """Python 3.11's ``wait_for`` can swallow a cancellation; a reconnect loop then carries
    on. One cancel() would leave this task running; cancel_and_wait asks until it ends."""

    async def scenario() -> tuple[bool, int]:
        swallowed = 0

        async def stubborn() -> None:
            nonlocal swallowed
            while True:
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    swallowed += 1
                    if swallowed > 2:
                        raise

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait([task]), 5)
        return task.done(), swallowed

    done, swallowed = asyncio.run(scenario())
    assert done
    assert swallowed == 3
