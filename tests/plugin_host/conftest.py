"""Fixtures for the plugin host tests: servers with plugins, over either broker."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quart_chat.config import Settings
from quart_chat.pytest_plugin import ChatServer
from quart_chat.testing import ServerProcess

from .kit import EXAMPLES, REPO


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path that plays the part of site-packages for one test."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    importlib.invalidate_caches()


@pytest.fixture
def serve(chat_server: Callable[..., ChatServer], settings: Settings) -> Callable[..., ChatServer]:
    """``serve(*plugins, **fields)``: a live server over the test's broker (memory, redis)."""

    def start(*plugins: object, **fields: Any) -> ChatServer:
        return chat_server(*plugins, settings=settings, **fields)

    return start


@pytest.fixture
def processes(redis_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """``processes(env)``: ``quart-chat serve`` child processes on the test's Redis.

    The example plugins folder is on their ``PYTHONPATH``, so ``-p command_bot`` works.
    """
    started: list[ServerProcess] = []
    path = os.pathsep.join(filter(None, [str(EXAMPLES), str(REPO), os.environ.get("PYTHONPATH")]))

    def start(env: dict[str, str] | None = None, *args: str) -> ServerProcess:
        full = {"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_LOG_LEVEL": "info",
                "QUART_CHAT_REDIS_PROBE_INTERVAL": "0.2", "PYTHONPATH": path, **(env or {})}
        process = ServerProcess(full, *args)
        started.append(process)
        return process.start()

    yield start
    for process in reversed(started):
        process.__exit__(None, None, None)
