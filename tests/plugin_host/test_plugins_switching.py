"""Switching plugins off (-p no:NAME, QUART_CHAT_DISABLE_PLUGINS), -p from the working
directory, repeatable --plugins-dir, and where every plugin came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from quart_chat.config import Settings
from quart_chat.plugins import describe, make_plugin_manager

from .kit import REPO
from .test_plugins_loading import SHOUT, _dist, _write


def _names(settings: Settings) -> list[str]:
    return [name for name, _ in describe(make_plugin_manager(settings))]


def test_p_no_name_switches_an_installed_entry_point_off(site):
    _dist(site, "qc_off_ep", SHOUT.format(tag="ep"), "shouty")
    assert "shouty" in _names(Settings())
    assert "shouty" not in _names(Settings(plugins=("no:shouty",)))


def test_disable_plugins_switches_off_by_file_and_module_name_without_importing(tmp_path, site):
    """A switched-off plugin is not even imported, so a broken one can be switched off."""
    folder = tmp_path / "p"
    _write(folder, "broken.py", "raise RuntimeError('must not be imported')")
    _write(folder, "kept.py", SHOUT.format(tag="kept"))
    _write(site, "qc_off_mod.py", "raise RuntimeError('must not be imported')")
    settings = Settings.from_env({"QUART_CHAT_DISABLE_PLUGINS": "broken, qc_off_mod",
                                  "QUART_CHAT_PLUGINS_DIR": str(folder),
                                  "QUART_CHAT_PLUGINS": "qc_off_mod"})
    assert _names(settings) == [f"kept ({folder / 'kept.py'})"]


def test_plugins_dir_is_repeatable_and_the_environment_separates_with_pathsep(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _write(one, "first.py", SHOUT.format(tag="1"))
    _write(two, "second.py", SHOUT.format(tag="2"))
    expected = [f"first ({one / 'first.py'})", f"second ({two / 'second.py'})"]
    env = Settings.from_env({"QUART_CHAT_PLUGINS_DIR": f"{one}{os.pathsep}{two}"})
    assert env.plugins_dir == (str(one), str(two))
    assert _names(env) == expected
    result = _cli(tmp_path, "plugins", "--plugins-dir", str(one), "--plugins-dir", str(two))
    assert result.returncode == 0, result.stderr
    assert f"first ({one / 'first.py'})" in result.stdout
    assert f"second ({two / 'second.py'})" in result.stdout


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -P: the working directory is not put on sys.path by Python itself (as with the
    # quart-chat script), so the loader must find -p modules there on its own.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-P", "-m", "quart_chat", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_p_finds_a_module_in_the_working_directory_and_plugins_shows_its_source(tmp_path):
    _write(tmp_path, "mybot.py", SHOUT.format(tag="cwd"))
    result = _cli(tmp_path, "plugins", "-p", "mybot")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "mybot", "    hooks: filter_message",
        f"    from: plugin module 'mybot' ({(tmp_path / 'mybot.py').resolve()})"]
