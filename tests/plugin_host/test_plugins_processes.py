"""Several real server processes: bots answer once, history is shared or survives restarts."""

from __future__ import annotations

import pytest

from quart_chat import ChatClient
from quart_chat.testing import ServerProcess

from .kit import EXAMPLES, REPO, WAIT


def _until_markers(clients, count_markers):
    """Every message each client receives until it has seen ``count_markers`` markers."""
    received = {}
    for name, client in clients.items():
        messages, markers = [], 0
        while markers < count_markers:
            message = client.receive(WAIT)
            messages.append(message)
            markers += message.text.startswith("marker")
        received[name] = messages
    return received


@pytest.mark.redis
def test_command_bot_answers_each_command_once_with_two_processes(processes):
    """Both processes load the bot; only the one that accepted a command answers it."""
    env = {"QUART_CHAT_PLUGINS": "command_bot,redis_history"}
    first, second = processes(env), processes(env)
    alice = ChatClient(first.ws_url, "alice")
    bob = ChatClient(second.ws_url, "bob")
    try:
        for client in (alice, bob):
            client.subscribe("game")
        commands = ["/roll 2d6", "/who", "/time"]
        for command in commands:
            alice.publish("game", command)
        bob.publish("game", "/help")  # a command on the other process
        alice.publish("game", "marker from alice")
        bob.publish("game", "marker from bob")
        received = _until_markers({"alice": alice, "bob": bob}, 2)
        for messages in received.values():
            answers = [m.text for m in messages if m.sender == "bot"]
            assert len(answers) == 4, answers
            assert "in game: alice, bob" in answers  # /who sees both processes' clients
        history = alice.history("game", limit=100)
        assert sum(m.sender == "bot" for m in history) == 4
    finally:
        alice.close()
        bob.close()


@pytest.mark.redis
def test_redis_history_is_shared_by_processes_and_outlives_them(processes):
    """History written through one process is served by another, and after both restart."""
    env = {"QUART_CHAT_PLUGINS": "redis_history"}
    first, second = processes(env), processes(env)
    alice = ChatClient(first.ws_url, "alice")
    alice.subscribe("news")
    mids = [alice.publish("news", f"item {n}") for n in range(5)]
    alice.close()
    bob = ChatClient(second.ws_url, "bob")
    page = bob.history("news", limit=3)
    assert [m.mid for m in page] == mids[:1:-1]
    older = bob.history("news", limit=3, before=page[-1].mid)
    assert [m.text for m in older] == ["item 1", "item 0"]
    bob.close()
    first.stop()
    second.stop()
    third = processes(env)
    carol = ChatClient(third.ws_url, "carol")
    assert [m.text for m in carol.history("news")] == [
        f"item {n}" for n in range(4, -1, -1)]
    carol.close()


def test_sqlite_history_survives_a_server_restart(tmp_path):
    """Messages kept by sqlite_history are served again after the process restarts."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "sqlite_history.py").symlink_to(EXAMPLES / "sqlite_history.py")
    env = {"QUART_CHAT_PLUGINS_DIR": str(folder), "PYTHONPATH": str(REPO),
           "QUART_CHAT_REDIS_URL": "",  # the embedded broker: no Redis involved at all
           "QUART_CHAT_PLUGIN_SQLITE_HISTORY_PATH": str(tmp_path / "chat.sqlite3")}
    with ServerProcess(env) as server:
        alice = ChatClient(server.ws_url, "alice")
        alice.subscribe("diary")
        for n in range(3):
            alice.publish("diary", f"day {n}")
        alice.close()
        assert server.stop() == 0
    with ServerProcess(env) as server:
        bob = ChatClient(server.ws_url, "bob")
        history = bob.history("diary")
        bob.close()
    assert [(m.sender, m.text) for m in history] == [
        ("alice", "day 2"), ("alice", "day 1"), ("alice", "day 0")]
