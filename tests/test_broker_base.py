"""The pieces every backend shares (quart_chat.backends, .base, .redis_support)."""

from __future__ import annotations

import asyncio
import importlib

from quart_chat.backends import SCHEMES, open_backend
from quart_chat.backends.redis_support import redact
from quart_chat.config import Settings
from quart_chat.tasks import cancel_and_wait


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


def test_a_url_in_a_message_never_shows_its_credentials():
    """Every backend names its URL in errors and logs through one redaction."""
    assert redact("redis://user:s3cret@h:6379/0") == "redis://***@h:6379/0"
    assert redact("redis+sentinel://:s3cret@a:1,b:2/main/2") == "redis+sentinel://***@a:1,b:2/main/2"
    assert redact("redis+cluster://s3cret@h:1") == "redis+cluster://***@h:1"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_every_scheme_opens_a_backend_module():
    """A backend is one module with ``open`` and one entry in the scheme table; the Redis
    family also gives plugins a ``client``."""
    for scheme, name in SCHEMES.items():
        module = importlib.import_module(f"quart_chat.backends.{name}")
        assert callable(module.open), scheme
        assert callable(getattr(module, "client", None)) == (scheme != "memory"), scheme


def test_store_claim_has_one_winner_per_key_among_processes_until_its_ttl(settings: Settings):
    """Two processes (two backends on one Redis or cluster; one store in memory, which
    is one process) claim the same key: one wins, the other loses, and once the ttl
    passes the key can be claimed again. Timers rely on it to run once per period."""

    async def scenario() -> list[bool]:
        one = open_backend(settings, "one")
        two = open_backend(settings, "two") if settings.redis_url else one
        try:
            # Long ttls where the answer must not depend on how long a call takes.
            results = [await one.store.claim("k", 60), await two.store.claim("k", 60),
                       await one.store.claim("other", 60), await one.store.claim("brief", 0.2)]
            await asyncio.sleep(0.5)
            return [*results, await two.store.claim("brief", 0.2)]
        finally:
            for backend in {id(b): b for b in (one, two)}.values():
                await backend.broker.close()

    assert asyncio.run(scenario()) == [True, False, True, True, True]
