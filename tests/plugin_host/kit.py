"""Helpers for the plugin host tests: load the example plugins, record hook calls."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from quart_chat import ChatError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "plugins"
#: Seconds to wait for what should come promptly (an upper bound, never asserted on).
WAIT = 10.0


def load_example(name: str) -> ModuleType:
    """The example plugin ``plugins/<name>.py`` as a module (imported once per run)."""
    module_name = f"quart_chat_examples.{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module


class Recorder:
    """Hook calls seen by a test plugin, readable from the test thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._changed = threading.Condition()

    def add(self, hook: str, value: Any = None) -> None:
        with self._changed:
            self.calls.append((hook, value))
            self._changed.notify_all()

    def of(self, hook: str) -> list[Any]:
        with self._changed:
            return [value for name, value in self.calls if name == hook]

    def wait(self, hook: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Block until ``hook`` was seen ``count`` times (bounded); its values."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.of_locked(hook)) >= count, timeout)
            values = self.of_locked(hook)
        assert len(values) >= count, f"{hook} seen {len(values)} times, expected {count}"
        return values

    def of_locked(self, hook: str) -> list[Any]:
        return [value for name, value in self.calls if name == hook]


def refusal(call: Callable[..., object], *args: Any) -> ChatError:
    """The server's error for a client call (``refusal(alice.publish, "lobby", "hi")``);
    the test fails if the call succeeds."""
    with pytest.raises(ChatError) as caught:
        call(*args)
    return caught.value


def wait_logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = WAIT) -> None:
    """Until ``text`` was logged (bounded): for hooks that run beside the client's frames
    (``client_connected`` runs while the session already serves)."""
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"{text!r} was not logged"
        time.sleep(0.01)
