"""Mistakes point at themselves: wrong return values, misspelled hooks and variables,
a forgotten @hookimpl, a plugin whose startup fails."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from quart_chat import Message, hookimpl, plugin_settings
from quart_chat.config import Settings
from quart_chat.errors import ConfigError
from quart_chat.plugins import make_plugin_manager

from .kit import REPO, refusal


class WrongHistory:
    @hookimpl
    def history(self):
        return "nope"


class MixedHistory:
    @hookimpl
    def history(self, channel):
        return [Message(channel=channel, sender="a", text="ok", ts=1.0, mid="1"), "junk"]


class SaysNo:
    @hookimpl
    def authorize(self):
        return "no"


@pytest.mark.parametrize("plugin", [WrongHistory(), MixedHistory()])
def test_a_history_that_is_not_a_list_of_messages_is_internal_and_names_the_plugin(
        serve, caplog, plugin):
    """Nothing of a wrong answer reaches the client: it gets internal, the log the plugin."""
    server = serve(plugin)
    alice = server.connect("alice")
    assert refusal(alice.history, "lobby").code == "internal"
    name = type(plugin).__name__
    assert f"plugin {name}: hook history returned" in caplog.text
    assert "expected a list of Message or None" in caplog.text
    alice.ping()


def test_authorize_answering_a_string_is_a_mistake_not_a_yes(serve, caplog):
    """"no" is neither True nor False: internal, logged, and the subscription not made."""
    server = serve(SaysNo())
    alice = server.connect("alice")
    assert refusal(alice.subscribe, "lobby").code == "internal"
    assert alice.channels() == []
    assert "plugin SaysNo: hook authorize returned str 'no'; expected True, False or None" \
        in caplog.text


def test_a_misspelled_hook_name_suggests_the_hook(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "typo.py").write_text("from quart_chat import hookimpl\n\n"
                                    "@hookimpl\ndef mesage_published(message):\n    pass\n")
    with pytest.raises(ConfigError, match=r"plugin file .*typo\.py: 'mesage_published' is not "
                                          r"a quart-chat hook; did you mean 'message_published'"):
        make_plugin_manager(Settings(plugins_dir=str(folder)))


def test_a_module_without_hookimpl_warns_and_names_the_unmarked_function(tmp_path, caplog):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "forgot.py").write_text("def message_published(message):\n    pass\n")
    caplog.set_level(logging.WARNING, logger="quart_chat.plugins")
    make_plugin_manager(Settings(plugins_dir=str(folder)))
    assert "forgot.py implements no hook: message_published is not marked @hookimpl" \
        in caplog.text


class Greets:
    @hookimpl
    def startup(self):
        self.config = plugin_settings("greets", greeting="hi")


def test_an_unknown_plugin_variable_warns_at_startup_with_the_nearest_name(
        serve, caplog, monkeypatch):
    monkeypatch.setenv("QUART_CHAT_PLUGIN_GREETS_GRETING", "hello")
    monkeypatch.setenv("QUART_CHAT_PLUGIN_GREETS_GREETING", "hello")
    serve(Greets())
    assert ("QUART_CHAT_PLUGIN_GREETS_GRETING is set but no loaded plugin reads it; did you "
            "mean QUART_CHAT_PLUGIN_GREETS_GREETING?") in caplog.text
    assert "QUART_CHAT_PLUGIN_GREETS_GREETING is set" not in caplog.text


def test_a_startup_failure_ends_serve_with_the_plugins_own_message(tmp_path):
    """A bad plugin setting: one log line, then the message as the last line, exit 1."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "counted.py").write_text(
        "from quart_chat import hookimpl, plugin_settings\n\n"
        "@hookimpl\ndef startup():\n    plugin_settings('counted', count=3)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "QUART_CHAT_PLUGIN_COUNTED_COUNT": "x"}
    result = subprocess.run(
        [sys.executable, "-m", "quart_chat", "serve", "--bind", "127.0.0.1:1",
         "--plugins-dir", str(folder)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"quart-chat: startup failed: plugin counted ({folder / 'counted.py'}): "
                    "QUART_CHAT_PLUGIN_COUNTED_COUNT: expected an integer, got 'x'")
    assert "Traceback" not in result.stderr and "Lifespan failure" not in result.stderr
