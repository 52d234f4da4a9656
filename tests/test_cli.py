"""The ``quart-chat`` command and plain ``hypercorn`` deployment, as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from quart_chat.cli import _setting_options, main, settings_from
from quart_chat.protocol import CLOSE_GOING_AWAY
from quart_chat.testing import LOOPBACK, ServerProcess, free_port, wait_for_health

from .helpers import wait_until
from .wsclient import Client, close_code


def test_serve_help_lists_every_setting_with_its_variable():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--bind", "--redis-url", "--workers", "--plugins-dir", "--plugin",
                 "--jwt-secret", "--allowed-origins"):
        assert flag in result.output
    assert "QUART_CHAT_REDIS_URL" in result.output


@pytest.mark.parametrize(("args", "env", "expected"), [
    ([], {}, (False, False)),
    (["--join-leave", "--require-exp"], {}, (True, True)),
    ([], {"QUART_CHAT_JOIN_LEAVE": "yes", "QUART_CHAT_REQUIRE_EXP": "1"}, (True, True)),
    (["--no-join-leave"], {"QUART_CHAT_JOIN_LEAVE": "true"}, (False, False)),
    (["--no-require-exp"], {"QUART_CHAT_REQUIRE_EXP": "true"}, (False, False)),
])
def test_boolean_settings_are_switches_that_override_the_environment(args, env, expected):
    """Every boolean setting is ``--name/--no-name``; absent, the environment decides."""
    seen = []

    @click.command()
    @_setting_options
    def probe(**options):
        seen.append(settings_from(options))

    environ = {"QUART_CHAT_JOIN_LEAVE": "", "QUART_CHAT_REQUIRE_EXP": "", **env}
    result = CliRunner().invoke(probe, args, env=environ)
    assert result.exit_code == 0, result.output
    assert (seen[0].join_leave, seen[0].require_exp) == expected


def test_several_workers_with_the_embedded_broker_are_refused():
    result = CliRunner().invoke(main, ["serve", "--workers", "2"], env={})
    assert result.exit_code == 2
    assert "needs QUART_CHAT_REDIS_URL" in result.output


def test_bad_option_values_are_refused_clearly():
    result = CliRunner().invoke(main, ["serve", "--max-frame-bytes", "0"])
    assert result.exit_code == 2
    assert "QUART_CHAT_MAX_FRAME_BYTES must be greater than 0" in result.output


def test_unreachable_redis_stops_startup_with_a_clear_message():
    port = free_port()
    env = {**os.environ, "QUART_CHAT_REDIS_URL": f"redis://{LOOPBACK}:{port}/0",
           "QUART_CHAT_BIND": f"{LOOPBACK}:{free_port()}"}
    done = subprocess.run([sys.executable, "-m", "quart_chat", "serve"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot reach Redis" in done.stderr


def test_sigterm_closes_sessions_with_1001_cleans_redis_and_exits_0(redis_server, redis_url):
    with ServerProcess({"QUART_CHAT_REDIS_URL": redis_url}) as server:
        clients = [Client(server.ws_url, f"c{n}") for n in range(20)]
        for client in clients:
            client.ok("subscribe", channel="room")
        assert redis_server.cli("--scan", "--pattern", "quart-chat:*").split()
        assert server.stop(signal.SIGTERM) == 0
        for client in clients:
            assert close_code(client.ws) == CLOSE_GOING_AWAY
            client.close()
    assert redis_server.cli("--scan", "--pattern", "quart-chat:*").split() == []


def test_workers_share_one_port_and_deliver_across_processes(redis_server, redis_url):
    """``--workers 2``: two processes, one pub/sub connection each, messages cross."""
    env = {"QUART_CHAT_REDIS_URL": redis_url}
    with ServerProcess(env, "--workers", "2") as server:
        deadline = time.monotonic() + 20
        while redis_server.cli("CLIENT", "LIST").count(":pubsub") < 2:
            assert time.monotonic() < deadline, "the second worker never connected"
            time.sleep(0.1)
        clients = [Client(server.ws_url, f"c{n}") for n in range(16)]
        try:
            nodes = set()
            for client in clients:
                client.ok("subscribe", channel="room")
            clients[0].ok("publish", channel="room", text="to all workers")
            for client in clients:
                assert client.next()["text"] == "to all workers"
            for line in redis_server.cli("CLIENT", "LIST").splitlines():
                if ":pubsub" in line:
                    nodes.add(line)
            assert len(nodes) == 2
        finally:
            for client in clients:
                client.close()
        assert server.stop(signal.SIGTERM) == 0


def test_plain_hypercorn_deployment_reads_the_environment(redis_url):
    """``hypercorn "quart_chat:create_app()"`` is how people deploy it."""
    port = free_port()
    env = {**os.environ, "QUART_CHAT_REDIS_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "quart_chat:create_app()", "--bind",
         f"{LOOPBACK}:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = wait_for_health(f"http://{LOOPBACK}:{port}")
        assert health["broker"] == "redis"
        alice = Client(f"ws://{LOOPBACK}:{port}/ws", "alice")
        alice.ok("subscribe", channel="room")
        alice.ok("publish", channel="room", text="deployed")
        assert alice.next()["text"] == "deployed"
        alice.close()
    finally:
        process.terminate()
        process.wait(15)


@pytest.mark.parametrize("args", [["--version"], ["plugins"]])
def test_other_commands_run(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_serve_runs_the_same_app_and_settings_under_another_server(redis_url, server):
    """``--server`` with ``--workers`` and an option given on the command line: messages
    cross the two workers, and the option reached each worker's app."""
    with ServerProcess({"QUART_CHAT_REDIS_URL": redis_url}, "--server", server,
                       "--workers", "2", "--max-text-length", "10") as running:
        # both workers up (granian also hangs on a SIGTERM that lands mid-startup)
        wait_until(lambda: running.log().count("quart-chat ready") == 2, 20, "two workers")
        clients = [Client(running.ws_url, f"c{n}") for n in range(6)]
        for client in clients:
            client.ok("subscribe", channel="room")
        assert {c.welcome["limits"]["max_text_length"] for c in clients} == {10}
        clients[0].ok("publish", channel="room", text="hi")
        assert all(c.next()["text"] == "hi" for c in clients)
        assert clients[1].error("publish", channel="room", text="x" * 11)["code"] == "too_large"
        for client in clients:
            client.close()
        status = running.stop(signal.SIGTERM)
        assert status == 0, running.log()[-3000:]


def test_serve_with_a_server_that_is_not_installed_says_how_to_get_it(monkeypatch):
    """``--server granian`` without granian: one clear line naming the extra, no traceback."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "granian" else real(name, *a))
    result = CliRunner().invoke(main, ["serve", "--server", "granian"])
    assert result.exit_code == 2
    assert "pip install 'quart-chat[servers]'" in result.output
