"""The helpers plugin authors use: plugin_settings and hook tracing."""

from __future__ import annotations

import logging

import pytest

from quart_chat import hookimpl, plugin_settings
from quart_chat.errors import ConfigError
from quart_chat.plugin_settings import env_name


def test_plugin_settings_defaults_when_nothing_is_set():
    config = plugin_settings("demo", environ={}, words=("a",), strikes=3, on=False, url=None)
    assert dict(config) == {"words": ("a",), "strikes": 3, "on": False, "url": None}
    assert config.words == ("a",) and config["strikes"] == 3


def test_plugin_settings_converts_environment_strings_to_the_defaults_types():
    environ = {
        "QUART_CHAT_PLUGIN_MY_BOT_WORDS": "spam, eggs ,,",
        "QUART_CHAT_PLUGIN_MY_BOT_STRIKES": "5",
        "QUART_CHAT_PLUGIN_MY_BOT_WINDOW": "2.5",
        "QUART_CHAT_PLUGIN_MY_BOT_ON": "Yes",
        "QUART_CHAT_PLUGIN_MY_BOT_URL": "redis://127.0.0.1:1/0",
        "QUART_CHAT_PLUGIN_OTHER_STRIKES": "9",
    }
    config = plugin_settings("my-bot", environ=environ, words=(), strikes=3, window=1.0,
                             on=False, url=None)
    assert (config.words, config.strikes, config.window, config.on, config.url) == (
        ("spam", "eggs"), 5, 2.5, True, "redis://127.0.0.1:1/0")


def test_plugin_settings_names_the_variable_of_a_bad_value():
    with pytest.raises(ConfigError, match="QUART_CHAT_PLUGIN_DEMO_STRIKES: expected an integer"):
        plugin_settings("demo", environ={"QUART_CHAT_PLUGIN_DEMO_STRIKES": "many"}, strikes=3)
    with pytest.raises(ConfigError, match="QUART_CHAT_PLUGIN_DEMO_ON: expected true or false"):
        plugin_settings("demo", environ={"QUART_CHAT_PLUGIN_DEMO_ON": "maybe"}, on=True)


def test_plugin_settings_unknown_key_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no setting 'nope'"):
        _ = plugin_settings("demo", environ={}, a=1).nope
    assert env_name("redis.history", "max-len") == "QUART_CHAT_PLUGIN_REDIS_HISTORY_MAX_LEN"


def test_plugins_trace_logs_every_hook_call_with_its_plugin(serve, monkeypatch, caplog):
    """QUART_CHAT_TRACE_PLUGINS=1 logs each hook call and how long it took."""
    monkeypatch.setenv("QUART_CHAT_TRACE_PLUGINS", "1")

    class Traced:
        @hookimpl
        def filter_message(self):
            return None

    caplog.set_level(logging.INFO, logger="quart_chat.plugins")
    server = serve(Traced())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert "trace: Traced.filter_message took" in caplog.text


PLUGIN_AUTHOR_TEST = '''
import pytest

from quart_chat import Rejected, hookimpl


class Shout:
    @hookimpl
    def filter_message(self, message):
        if message.text.isupper():
            raise Rejected("no shouting")
        return message.replace(text=message.text + "!")


def test_my_plugin(chat_server):
    server = chat_server(Shout(), hook_timeout=1.0)
    alice, bob = server.connect("alice"), server.connect("bob")
    for client in (alice, bob):
        client.subscribe("lobby")
    with pytest.raises(Rejected, match="no shouting"):
        alice.publish("lobby", "HEY")
    bob.assert_quiet(0.2)
    alice.publish("lobby", "hi")
    assert bob.receive(timeout=5).text == "hi!"


def test_my_plugin_fails_when_it_should(chat_server):
    server = chat_server(Shout())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert alice.receive(timeout=5).text == "hi"   # wrong on purpose: it is "hi!"
'''


def test_chat_server_fixture_works_in_a_plugin_authors_own_project(tmp_path):
    """The pytest11 entry point gives any project the chat_server fixture, no conftest."""
    import subprocess
    import sys

    (tmp_path / "test_shout.py").write_text(PLUGIN_AUTHOR_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shout.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "test_my_plugin_fails_when_it_should" in result.stdout


def test_plugins_trace_says_what_each_hook_did_and_flags_slow_ones(serve, caplog):
    """trace_plugins: passed / answered / rejected with the reason / raised, and SLOW."""
    import time

    from quart_chat import ChatError, Rejected

    class Judge:
        @hookimpl
        def filter_message(self, message):  # sync: it runs in a worker thread
            if message.text == "HELLO":
                raise Rejected("no shouting")
            if message.text == "slow":
                time.sleep(0.2)
            if message.text == "boom":
                raise RuntimeError("kaput")
            return message.replace(text="x") if message.text == "rewrite" else None

    caplog.set_level(logging.INFO, logger="quart_chat.plugins")
    server = serve(Judge(), trace_plugins=True, slow_hook_seconds=0.1)
    alice = server.connect("alice")
    alice.subscribe("lobby")
    for text in ("hi", "rewrite", "slow"):
        alice.publish("lobby", text)
    for text in ("HELLO", "boom"):
        with pytest.raises(ChatError):
            alice.publish("lobby", text)
    lines = [line for line in caplog.text.splitlines() if "trace: Judge.filter_message" in line]
    outcomes = [line.split(" ms", 1)[1] for line in lines]
    assert outcomes[0] == ": passed" and outcomes[1] == ": answered"
    assert outcomes[2] == " (SLOW): passed"
    assert outcomes[3] == ": rejected (rejected: no shouting)"
    assert outcomes[4] == ": raised RuntimeError('kaput')"
