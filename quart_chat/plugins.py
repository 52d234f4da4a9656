"""Loading plugins: the manager factory, entry points, ``--plugins-dir``, ``-p``, code.

This module only loads (and, for ``--reload``, loads again); :mod:`quart_chat.hooks`
calls the hooks. The manager remembers where each plugin came from
(:class:`PluginManager.origins`), which ``serve`` logs, ``quart-chat plugins`` shows and
the reloader watches.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import pluggy

from . import hookspecs
from .config import Settings
from .errors import ConfigError

log = logging.getLogger("quart_chat.plugins")

ENTRY_POINT_GROUP = "quart_chat"
#: Name prefix of plugins the server registers itself (not listed by :func:`describe`).
BUILTIN_PREFIX = "quart_chat."
#: ``-p no:NAME`` switches plugin NAME off (pytest's spelling).
DISABLE_PREFIX = "no:"


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where one plugin came from."""

    #: How it was found and what it is, for people: ``plugin file /srv/plugins/bot.py``.
    source: str
    #: The file to watch and load again on ``--reload``; None for entry points and code.
    path: Path | None = None
    #: The module's name in ``sys.modules`` (replaced when the file is loaded again).
    module: str | None = None


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with quart-chat's specs, and the origin of every plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        #: Plugin name -> where it came from, in load order.
        self.origins: dict[str, Origin] = {}


def make_plugin_manager(settings: Settings, extra: Iterable[object] = ()) -> PluginManager:
    """A manager with the specs, entry points, ``plugins_dir``, ``plugins`` and ``extra``,
    less the plugins switched off (``disable_plugins``, ``-p no:NAME``).

    Raises :class:`ConfigError` naming the file, module or entry point when a plugin
    cannot load, when a plugin implements a hook that does not exist (a misspelling: the
    nearest hook name is suggested) or takes an argument its hook does not offer, and
    when it uses a hook wrapper (the host awaits each implementation itself, so wrappers
    could not wrap anything). A module from ``-p`` or a plugins folder that implements
    no hook is loaded with a warning (a forgotten ``@hookimpl``).
    """
    pm = PluginManager()
    modules = [name for name in settings.plugins if not name.startswith(DISABLE_PREFIX)]
    off = set(settings.disable_plugins)
    off.update(name[len(DISABLE_PREFIX):] for name in settings.plugins
               if name.startswith(DISABLE_PREFIX))
    for entry_point in _entry_points():
        name = entry_point.name
        if name in off or pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        source = f"entry point {name!r} ({entry_point.value})"
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise ConfigError(
                f"plugin {source} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, plugin, name, Origin(source))
    for folder in settings.plugins_dir:
        for path in _plugin_files(Path(folder)):
            if path.stem not in off:
                _register(pm, *_load_file(path), warn_if_empty=True)
    if modules:
        _import_from_working_directory()
    for module_name in modules:
        if module_name not in off:
            module = _import_module(module_name)
            origin = Origin(f"plugin module {module_name!r} ({_where(module)})",
                            _file_of(module), module_name)
            _register(pm, module, module_name, origin, warn_if_empty=True)
    for plugin in extra:
        name = _plugin_name(plugin)
        if name not in off:
            _register(pm, plugin, name, Origin(f"plugin {name!r} (given in code)"))
    check_hook_names(pm)
    return pm


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _register(pm: PluginManager, plugin: object, name: str, origin: Origin, *,
              warn_if_empty: bool = False) -> None:
    """Register one plugin; the same object loaded twice (say by -p and a folder) once."""
    source = origin.source
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
    pm.origins[name] = origin
    if warn_if_empty and not pm.get_hookcallers(plugin):
        log.warning("%s implements no hook%s", source, _forgotten_marker(pm, plugin))


def _forgotten_marker(pm: PluginManager, plugin: object) -> str:
    """Advice for a plugin without hooks: the functions named like hooks lack @hookimpl."""
    specs = {name for name, caller in vars(pm.hook).items()
             if isinstance(caller, pluggy.HookCaller) and caller.spec is not None}
    unmarked = sorted(name for name in specs if callable(getattr(plugin, name, None)))
    if unmarked:
        return f": {', '.join(unmarked)} is not marked @hookimpl"
    return " (did you forget @hookimpl?)"


def check_hook_names(pm: PluginManager) -> None:
    """Refuse implementations of hooks that do not exist, suggesting the nearest name."""
    callers = {name: caller for name, caller in vars(pm.hook).items()
               if isinstance(caller, pluggy.HookCaller)}
    specs = [name for name, caller in callers.items() if caller.spec is not None]
    for name, caller in callers.items():
        if caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            origin = pm.origins.get(impl.plugin_name)
            source = origin.source if origin else f"plugin {impl.plugin_name!r}"
            close = difflib.get_close_matches(name, specs, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: {name!r} is not a quart-chat hook{hint}")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {exc.plugin!r}: {exc}") from None


def _plugin_name(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _plugin_files(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        raise ConfigError(f"--plugins-dir {folder}: not a directory")
    for path in sorted(folder.glob("*.py")):
        if not path.name.startswith("_"):
            yield path


def plugin_file_name(path: Path) -> str:
    """The plugin name of a file in a plugins folder: its stem and where it is."""
    return f"{path.stem} ({path})"


def _load_file(path: Path) -> tuple[ModuleType, str, Origin]:
    """(module, plugin name, origin) of a plugins-folder file."""
    module_name = f"quart_chat_plugins.{path.stem}"
    module = _exec_file(module_name, path, f"plugin file {path}")
    return module, plugin_file_name(path), Origin(f"plugin file {path}", path, module_name)


def _exec_file(module_name: str, path: Path, source: str) -> ModuleType:
    """Import ``path`` as a new module ``module_name``; ``sys.modules`` keeps the previous
    module of that name if this one fails (a failed reload leaves the old one working)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{source}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        if previous is None:
            del sys.modules[module_name]
        else:
            sys.modules[module_name] = previous
        raise ConfigError(f"{source} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _import_from_working_directory() -> None:
    """Let ``-p name`` find ``name.py`` in the working directory, as ``python -m`` does
    (the ``quart-chat`` script alone would not)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ConfigError(
            f"plugin module {name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _where(module: ModuleType) -> str:
    path = _file_of(module)
    return str(path) if path else "built in"


# -- reloading (``--reload``) ------------------------------------------------------------


def load_again(pm: PluginManager, name: str) -> object:
    """A fresh import of plugin ``name``'s file, validated against the specs on its own.

    Raises :class:`ConfigError` (one line, naming the file) when it fails to import or
    to register; the running plugin is untouched either way.
    """
    origin = pm.origins[name]
    if origin.path is None or origin.module is None:
        raise ConfigError(f"{origin.source}: has no file to load again")
    module = _exec_file(origin.module, origin.path, origin.source)
    scratch = PluginManager()
    _register(scratch, module, name, origin)
    check_hook_names(scratch)
    return module


def load_new_file(path: Path) -> tuple[object, str, Origin]:
    """A file that appeared in a plugins folder: (module, name, origin), validated like
    :func:`load_again` and not registered yet."""
    module, name, origin = _load_file(path)
    scratch = PluginManager()
    _register(scratch, module, name, origin)
    check_hook_names(scratch)
    return module, name, origin


def swap(pm: PluginManager, name: str, new: object, origin: Origin) -> object | None:
    """Register ``new`` as plugin ``name`` in place of the current one (returned)."""
    old = pm.get_plugin(name)
    if old is not None:
        pm.unregister(old, name=name)
    pm.register(new, name=name)
    pm.origins[name] = origin
    return old


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


def origin_of(pm: pluggy.PluginManager, name: str) -> str:
    """Where plugin ``name`` came from, for people."""
    origins: dict[str, Origin] = getattr(pm, "origins", {})
    return origins[name].source if name in origins else f"plugin {name!r} (registered in code)"
