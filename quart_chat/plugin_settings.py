"""Settings for plugins: ``QUART_CHAT_PLUGIN_<NAME>_<KEY>`` environment variables, typed.

A plugin declares its settings once, with defaults, and reads them (usually in
``startup``) so nobody has to edit the plugin to configure it::

    from quart_chat import plugin_settings

    @hookimpl
    def startup(app):
        global config
        config = plugin_settings("moderation", words=("spam",), mode="mask", strikes=3)
        # QUART_CHAT_PLUGIN_MODERATION_WORDS="spam,eggs" -> config.words == ("spam", "eggs")

Each value is converted to the type of its default: ``tuple`` (comma-separated),
``bool`` (``1 true yes on`` / ``0 false no off``), ``int``, ``float`` or ``str``. A value
that cannot be converted raises :class:`quart_chat.errors.ConfigError` naming the
variable, so a typo stops startup instead of being ignored.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from .config import parse_bool
from .errors import ConfigError

PLUGIN_ENV_PREFIX = "QUART_CHAT_PLUGIN_"

#: Every variable a plugin in this process declared: the rest are misspellings.
_declared: set[str] = set()


def env_name(plugin: str, key: str) -> str:
    """The environment variable of one setting: ``env_name("my-bot", "greeting")``
    is ``QUART_CHAT_PLUGIN_MY_BOT_GREETING``."""
    return PLUGIN_ENV_PREFIX + _upper(plugin) + "_" + _upper(key)


def _upper(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class PluginSettings(Mapping[str, Any]):
    """A plugin's settings: read as attributes (``config.words``) or as a mapping."""

    def __init__(self, plugin: str, values: dict[str, Any]) -> None:
        self._plugin = plugin
        self._values = values

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"plugin {self._plugin!r} has no setting {key!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"PluginSettings({self._plugin!r}, {self._values!r})"


def plugin_settings(
    plugin: str, environ: Mapping[str, str] | None = None, **defaults: Any
) -> PluginSettings:
    """Read the settings of ``plugin``: each keyword is a setting and its default.

    :param plugin: the plugin's name, as used in its variables (``"redis_history"``).
    :param environ: where to read (``os.environ`` by default; tests pass a dict).
    :param defaults: ``key=default``; the default's type decides the conversion. Use
        ``None`` for an optional string setting.
    """
    environ = os.environ if environ is None else environ
    values = {}
    for key, default in defaults.items():
        name = env_name(plugin, key)
        _declared.add(name)
        raw = environ.get(name)
        values[key] = default if raw is None else _convert(name, default, raw)
    return PluginSettings(plugin, values)


def _convert(name: str, default: Any, raw: str) -> Any:
    if isinstance(default, bool):
        return parse_bool(name, raw)
    if isinstance(default, tuple):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(default, (int, float)):
        try:
            return type(default)(raw)
        except ValueError:
            kind = "an integer" if isinstance(default, int) else "a number"
            raise ConfigError(f"{name}: expected {kind}, got {raw!r}") from None
    return raw


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``QUART_CHAT_PLUGIN_*`` variable no plugin declared (so far:
    call it once plugins have started), with the nearest declared name when one is close.
    """
    environ = os.environ if environ is None else environ
    warnings = []
    for name in sorted(environ):
        if name.startswith(PLUGIN_ENV_PREFIX) and name not in _declared:
            close = difflib.get_close_matches(name, _declared, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"{name} is set but no loaded plugin reads it{hint}")
    return warnings
