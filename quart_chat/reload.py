"""Hot reload for plugin authors (``--reload``, development only).

Watches the plugins folders and the files of ``-p`` modules; when one changes, that
plugin alone is swapped in place — its ``shutdown``, the new module registered, its
``startup`` — while every connection stays open and every other plugin keeps running.
A file that fails to import, to register or to start leaves the running version in
place, with one log line that says why. A new file in a plugins folder is loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError
from .hooks import HookFailed
from .plugins import load_again, load_new_file, swap

if TYPE_CHECKING:
    from quart import Quart

    from .hooks import Hooks
    from .plugins import PluginManager

log = logging.getLogger("quart_chat.plugins")


class Reloader:
    """Swaps changed plugins of one server process."""

    def __init__(self, pm: PluginManager, hooks: Hooks, app: Quart,
                 folders: tuple[str, ...]) -> None:
        self.pm = pm
        self.hooks = hooks
        self.app = app
        self.folders = [Path(folder).resolve() for folder in folders]

    def watched(self) -> list[Path]:
        """The plugins folders and the file of every other plugin that has one."""
        files = {origin.path.resolve() for origin in self.pm.origins.values()
                 if origin.path is not None}
        outside = {path for path in files if path.parent not in self.folders}
        return [*self.folders, *sorted(outside)]

    async def run(self) -> None:
        """Watch until cancelled, reloading what changes."""
        import watchfiles

        paths = self.watched()
        if not paths:
            log.warning("--reload: no plugin file or folder to watch")
            return
        log.info("--reload: watching %s", ", ".join(map(str, paths)))
        async for changes in watchfiles.awatch(*paths, watch_filter=_python_file,
                                               debounce=400, step=20):
            for path in _existing(changed for _, changed in changes):
                await self.reload(path)

    def _plugin_of(self, path: Path) -> str | None:
        for name, origin in self.pm.origins.items():
            if origin.path is not None and origin.path.resolve() == path:
                return name
        return None

    async def reload(self, path: Path) -> bool:
        """Load ``path`` again (or for the first time) and swap it in; True if it was."""
        started = time.perf_counter()
        name = self._plugin_of(path)
        try:
            if name is not None:
                origin = self.pm.origins[name]
                new = load_again(self.pm, name)
            elif path.parent in self.folders and not path.name.startswith("_"):
                new, name, origin = load_new_file(path)
            else:
                return False
        except ConfigError as exc:
            log.error("reload: %s; the running version stays", exc)
            return False
        old = self.pm.get_plugin(name)
        if old is not None:
            await self.hooks.stop_plugin(name, self.app)
        swap(self.pm, name, new, origin)
        try:
            await self.hooks.start_plugin(name, self.app)
        except HookFailed as exc:
            if old is None:
                self.pm.unregister(new, name=name)
                del self.pm.origins[name]
                log.error("reload: %s; not loaded", exc.detail)
                return False
            swap(self.pm, name, old, origin)
            log.error("reload: %s; the previous version is back", exc.detail)
            await self.hooks.start_plugin(name, self.app)
            return False
        log.info("reload: plugin %s reloaded from %s in %.0f ms", name, path,
                 (time.perf_counter() - started) * 1000)
        return True


def _python_file(change: object, path: str) -> bool:
    return path.endswith(".py")


def _existing(changed: Iterable[str]) -> list[Path]:
    """The changed files that exist: an editor's save can be delete + add, and what
    exists now is what counts."""
    paths = {Path(path).resolve() for path in changed}
    return sorted(path for path in paths if path.exists())
