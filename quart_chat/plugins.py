"""Loading plugins: the manager factory, entry points, ``--plugins-dir``, ``-p``, code.

This module only loads; :mod:`quart_chat.hooks` calls the hooks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pluggy

from . import hookspecs
from .config import Settings
from .errors import ConfigError

log = logging.getLogger("quart_chat.plugins")

ENTRY_POINT_GROUP = "quart_chat"
#: Name prefix of plugins the server registers itself (not listed by :func:`describe`).
BUILTIN_PREFIX = "quart_chat."


def make_plugin_manager(settings: Settings, extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """A manager with the specs, entry points, ``plugins_dir``, ``plugins`` and ``extra``.

    Raises :class:`ConfigError` naming the file, module or entry point when a plugin
    cannot load, when a plugin implements a hook that does not exist (a misspelling) or
    takes an argument its hook does not offer, and when it uses a hook wrapper (the host
    awaits each implementation itself, so wrappers could not wrap anything).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for entry_point in _entry_points():
        if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
            continue
        source = f"entry point {entry_point.name!r} ({entry_point.value})"
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise ConfigError(
                f"plugin {source} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, plugin, entry_point.name, source)
    if settings.plugins_dir:
        for path in _plugin_files(Path(settings.plugins_dir)):
            _register(pm, _import_file(path), f"{path.stem} ({path})", f"plugin file {path}")
    for module_name in settings.plugins:
        _register(pm, _import_module(module_name), module_name, f"plugin module {module_name!r}")
    for plugin in extra:
        name = _plugin_name(plugin)
        _register(pm, plugin, name, f"plugin {name!r}")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {exc.plugin!r}: {exc}") from None
    return pm


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _register(pm: pluggy.PluginManager, plugin: object, name: str, source: str) -> None:
    """Register one plugin; the same object loaded twice (say by -p and a folder) once."""
    if pm.is_registered(plugin):
        log.debug("%s is already registered; skipped", source)
        return
    if pm.get_plugin(name) is not None:
        raise ConfigError(f"{source}: another plugin is already registered as {name!r}")
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for caller in pm.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                pm.unregister(plugin)
                raise ConfigError(
                    f"{source}: {caller.name} is a hook wrapper; quart-chat awaits every "
                    "implementation itself, so use tryfirst=True / trylast=True instead"
                )


def _plugin_name(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _plugin_files(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        raise ConfigError(f"--plugins-dir {folder}: not a directory")
    for path in sorted(folder.glob("*.py")):
        if not path.name.startswith("_"):
            yield path


def _import_file(path: Path) -> object:
    name = f"quart_chat_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin file {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(
            f"plugin file {path} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _import_module(name: str) -> object:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ConfigError(
            f"plugin module {name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def describe(pm: pluggy.PluginManager) -> list[tuple[str, list[str]]]:
    """(plugin name, sorted hook names) for every registered plugin.

    The server's own built-in plugins (named ``quart_chat.*``, e.g. the node heartbeat)
    are left out: they are part of the server, not something a user loaded.
    """
    rows = []
    for name, plugin in pm.list_name_plugin():
        if name.startswith(BUILTIN_PREFIX):
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        rows.append((name, hooks))
    return rows
