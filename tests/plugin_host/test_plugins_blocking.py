"""Hooks cannot freeze the server: sync hooks run in worker threads; slow and hung hooks
are logged with where they are."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

from quart_chat import hookimpl

from .kit import WAIT, refusal


class Sleeper:
    """A sync filter that blocks (``time.sleep``) on the text "slow"."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.entered = threading.Event()
        self.finished = threading.Event()

    @hookimpl
    def filter_message(self, message):
        if message.text == "slow":
            self.entered.set()
            time.sleep(self.seconds)
            self.finished.set()


def test_a_blocking_sync_hook_does_not_stop_other_clients_being_served(serve, caplog):
    """While alice's sync filter sleeps 2 s, bob's ping is answered (before the sleep
    ends); the slow hook is logged with the line it is stuck on."""
    sleeper = Sleeper(2.0)
    server = serve(sleeper, slow_hook_seconds=0.5)
    alice, bob = server.connect("alice"), server.connect("bob")
    alice.subscribe("lobby")
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        reply = background.submit(alice.publish, "lobby", "slow")
        assert sleeper.entered.wait(WAIT)
        started = time.perf_counter()
        bob.ping()
        answered = time.perf_counter() - started
        assert not sleeper.finished.is_set(), "bob was answered only after the hook ended"
        reply.result(WAIT)
    assert answered < 1.0  # reported: typically a few ms; the causal check is above
    assert "plugin Sleeper: hook filter_message still running after 0.5s" in caplog.text
    assert "time.sleep(self.seconds)" in caplog.text


def test_a_hung_sync_hook_times_out_with_its_stack_and_its_session_goes_on(serve, caplog):
    """A sync hook past hook_timeout: internal for that request, the log shows where it
    hangs, and the sender's next frames are served while the thread still sleeps."""
    sleeper = Sleeper(5.0)
    server = serve(sleeper, hook_timeout=0.5)
    alice = server.connect("alice")
    alice.subscribe("lobby")
    assert refusal(alice.publish, "lobby", "slow").code == "internal"
    alice.ping()
    alice.publish("lobby", "fine")
    assert not sleeper.finished.is_set()
    assert "plugin Sleeper: hook filter_message timed out after 0.5s; it was at:" in caplog.text
    assert "time.sleep(self.seconds)" in caplog.text


class Hangs:
    @hookimpl
    async def authorize(self, channel):
        if channel == "stuck":
            await asyncio.sleep(3600)  # the line the timeout log must show


def test_a_hung_async_hook_times_out_with_the_line_it_awaited(serve, caplog):
    server = serve(Hangs(), hook_timeout=0.5)
    alice = server.connect("alice")
    assert refusal(alice.subscribe, "stuck").code == "internal"
    alice.subscribe("lobby")
    assert "plugin Hangs: hook authorize timed out after 0.5s; it was at:" in caplog.text
    assert "await asyncio.sleep(3600)" in caplog.text


def test_startup_sync_hooks_run_on_the_event_loop(serve):
    """startup may use the loop (create a task): nothing is served while it runs."""
    seen = []

    class Starts:
        @hookimpl
        def startup(self):
            seen.append(asyncio.get_running_loop())

    serve(Starts())
    assert len(seen) == 1
