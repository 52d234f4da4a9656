"""Settings come from the environment (QUART_CHAT_*) with clear errors for bad values."""

from __future__ import annotations

import pytest

from quart_chat.config import Settings
from quart_chat.errors import ConfigError


def test_defaults_are_safe_and_embedded():
    settings = Settings()
    assert settings.redis_url is None
    assert settings.workers == 1
    assert settings.max_frame_bytes == 32 * 1024


def test_from_env_converts_types():
    settings = Settings.from_env({
        "QUART_CHAT_REDIS_URL": "redis://127.0.0.1:1/0",
        "QUART_CHAT_WORKERS": "3",
        "QUART_CHAT_PUBLISH_RATE": "2.5",
        "QUART_CHAT_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "UNRELATED": "x",
    })
    assert settings.workers == 3
    assert settings.publish_rate == 2.5
    assert settings.allowed_origins == ("https://a.example", "https://b.example")


def test_bad_values_name_the_variable():
    with pytest.raises(ConfigError, match="QUART_CHAT_WORKERS: expected an integer"):
        Settings.from_env({"QUART_CHAT_WORKERS": "many"})
    with pytest.raises(ConfigError, match="QUART_CHAT_MAX_FRAME_BYTES must be greater than 0"):
        Settings.from_env({"QUART_CHAT_MAX_FRAME_BYTES": "0"})
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings().replace(nonsense=1)


def test_several_workers_need_redis():
    """The embedded broker cannot carry messages between processes."""
    with pytest.raises(ConfigError, match="needs QUART_CHAT_REDIS_URL"):
        Settings(workers=2).validate()
    Settings(workers=2, redis_url="redis://127.0.0.1:1/0").validate()


def test_unsupported_broker_scheme_is_refused():
    from quart_chat.backends import open_backend

    with pytest.raises(ConfigError, match="unsupported scheme 'kafka'"):
        open_backend(Settings(redis_url="kafka://x"), "node")
