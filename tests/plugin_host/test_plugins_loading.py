"""Plugins load from entry points, a plugins folder and -p module names; mistakes stop startup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quart_chat.config import Settings
from quart_chat.errors import ConfigError
from quart_chat.plugins import describe, make_plugin_manager

from .kit import EXAMPLES, REPO, WAIT

SHOUT = '''
from quart_chat import hookimpl

@hookimpl
def filter_message(message):
    return message.replace(text=message.text.upper() + " ({tag})")
'''


def _write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def _dist(site: Path, module: str, source: str, entry_name: str) -> None:
    """A tiny installed distribution: its module and a dist-info with one entry point."""
    _write(site, f"{module}.py", source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[quart_chat]\n{entry_name} = {module}\n")


def _cli(*args, env=None):
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "quart_chat", *args], capture_output=True,
                          text=True, env=full, timeout=60, check=False)


# -- the three sources ----------------------------------------------------------------------


def test_plugins_load_from_an_installed_entry_point(site, serve):
    """A package's [quart_chat] entry point is loaded and its hooks run."""
    _dist(site, "qc_shout_ep", SHOUT.format(tag="ep"), "shout")
    server = serve(entry_points=True)
    assert "shout" in dict(describe(server.service.pm))
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert alice.receive(WAIT).text == "HI (ep)"


def test_the_chat_server_fixture_loads_only_the_plugins_a_test_passes(site, serve):
    """An installed entry-point plugin stays out of a chat_server test unless asked for,
    so a test's result does not depend on what else is installed."""
    _dist(site, "qc_shout_ep2", SHOUT.format(tag="ep"), "shout")
    server = serve()
    assert describe(server.service.pm) == []
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert alice.receive(WAIT).text == "hi"


def test_plugins_load_every_py_file_of_the_plugins_dir(tmp_path, serve):
    """Every *.py in --plugins-dir is a plugin; _private files are skipped."""
    folder = tmp_path / "plugins"
    _write(folder, "shout.py", SHOUT.format(tag="dir"))
    _write(folder, "_helper.py", "raise RuntimeError('must not be imported')")
    server = serve(plugins_dir=str(folder))
    names = [name for name, _ in describe(server.service.pm)]
    assert names == [f"shout ({folder / 'shout.py'})"]
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert alice.receive(WAIT).text == "HI (dir)"


def test_plugins_load_by_module_name(site, serve):
    """-p module.path imports a module and registers it under that name."""
    _write(site / "qc_pkg", "__init__.py", "")
    _write(site / "qc_pkg", "shout.py", SHOUT.format(tag="mod"))
    server = serve(plugins=("qc_pkg.shout",))
    assert [name for name, _ in describe(server.service.pm)] == ["qc_pkg.shout"]
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert alice.receive(WAIT).text == "HI (mod)"


def test_plugins_the_same_module_from_two_sources_registers_once(site):
    """Loading one module by entry point and by -p does not run its hooks twice."""
    _dist(site, "qc_twice", SHOUT.format(tag="x"), "twice")
    pm = make_plugin_manager(Settings(plugins=("qc_twice",)))
    assert [name for name, _ in describe(pm)] == ["twice"]


def test_plugins_cli_lists_plugins_from_all_sources_with_their_hooks(tmp_path, site):
    """``quart-chat plugins`` shows what would load and the hooks each implements."""
    _dist(site, "qc_cli_ep", SHOUT.format(tag="ep"), "from-ep")
    _write(site, "qc_cli_mod.py", "from quart_chat import hookimpl\n\n"
                                  "@hookimpl\ndef history(channel):\n    return None\n")
    result = _cli("plugins", "--plugins-dir", str(EXAMPLES), "-p", "qc_cli_mod",
                  env={"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "from-ep\n    hooks: filter_message" in out
    assert "qc_cli_mod\n    hooks: history" in out
    bot_file = EXAMPLES / "command_bot.py"
    assert f"command_bot ({bot_file})\n    hooks: call, message_published, startup" in out
    assert "greeter (" in out
    assert "hooks: client_disconnected, client_subscribed, client_unsubscribed, startup" in out
    assert "redis_history (" in out
    assert "hooks: history, message_published, recover, shutdown, startup" in out


def test_plugins_cli_says_when_nothing_is_loaded():
    result = _cli("plugins")
    assert result.returncode == 0 and "no plugins loaded" in result.stdout


# -- mistakes stop startup with a clear message ------------------------------------------------


def test_plugins_a_file_that_fails_to_import_names_the_file_and_error(tmp_path):
    """A broken plugin file stops startup; the message names the file and the error."""
    path = _write(tmp_path / "plugins", "broken.py", "import not_a_real_module_xyz\n")
    with pytest.raises(ConfigError, match=rf"plugin file {path} failed to import: "
                                          r"ModuleNotFoundError: .*not_a_real_module_xyz"):
        make_plugin_manager(Settings(plugins_dir=str(tmp_path / "plugins")))


def test_plugins_serve_refuses_to_start_with_a_broken_plugin(tmp_path):
    """``quart-chat serve`` exits non-zero and prints which plugin failed, without serving."""
    path = _write(tmp_path / "plugins", "broken.py", "1 / 0\n")
    result = _cli("serve", "--bind", "127.0.0.1:1", "--plugins-dir", str(path.parent))
    assert result.returncode == 2
    assert f"plugin file {path} failed to import: ZeroDivisionError" in result.stderr


def test_plugins_a_module_that_fails_to_import_is_named():
    with pytest.raises(ConfigError, match="plugin module 'qc_missing_xyz' failed to import"):
        make_plugin_manager(Settings(plugins=("qc_missing_xyz",)))


def test_plugins_a_broken_entry_point_is_named(site):
    _dist(site, "qc_broken_ep", "raise ImportError('needs libfoo')\n", "broken-ep")
    with pytest.raises(ConfigError, match=r"entry point 'broken-ep' \(qc_broken_ep\) failed "
                                          "to import: ImportError: needs libfoo"):
        make_plugin_manager(Settings())


def test_plugins_a_misspelled_hook_stops_startup(tmp_path):
    """An @hookimpl whose name is not a hook is an error, not a silently unused function."""
    _write(tmp_path / "p", "typo.py", "from quart_chat import hookimpl\n\n"
                                      "@hookimpl\ndef filter_mesage(message):\n    pass\n")
    with pytest.raises(ConfigError, match="filter_mesage"):
        make_plugin_manager(Settings(plugins_dir=str(tmp_path / "p")))


def test_plugins_an_argument_the_hook_does_not_offer_stops_startup(tmp_path):
    _write(tmp_path / "p", "args.py", "from quart_chat import hookimpl\n\n"
                                      "@hookimpl\ndef authorize(user, channel):\n    pass\n")
    expected = r"(?s)plugin file .*args\.py: .*'user'.* can not be found in the hookspec"
    with pytest.raises(ConfigError, match=expected):
        make_plugin_manager(Settings(plugins_dir=str(tmp_path / "p")))


def test_plugins_hook_wrappers_are_refused_with_advice(tmp_path):
    """Wrappers cannot wrap awaited coroutines, so they are refused with an explanation."""
    _write(tmp_path / "p", "wrap.py", "from quart_chat import hookimpl\n\n"
                                      "@hookimpl(wrapper=True)\ndef history():\n"
                                      "    return (yield)\n")
    with pytest.raises(ConfigError, match=r"history is a hook wrapper.*tryfirst"):
        make_plugin_manager(Settings(plugins_dir=str(tmp_path / "p")))


def test_plugins_a_missing_plugins_dir_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        make_plugin_manager(Settings(plugins_dir=str(tmp_path / "nope")))
