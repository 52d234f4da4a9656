"""Typed settings: one class, safe defaults, built from the environment or a mapping.

Every field is also the environment variable ``QUART_CHAT_<FIELD>`` (upper case), so
``hypercorn "quart_chat:create_app()"`` and ``quart-chat serve`` read the same names.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "QUART_CHAT_"

SECONDS = 1.0
KIB = 1024
MIB = 1024 * KIB
#: ASGI servers ``quart-chat serve`` can run (the tests run the app under each).
SERVERS = ("hypercorn", "uvicorn", "granian")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Server settings. Fields are alphabetised; each is ``QUART_CHAT_<NAME>`` too."""

    #: Browser origins allowed to open a WebSocket; empty means any origin.
    allowed_origins: tuple[str, ...] = ()
    #: Key backends send as the ``X-API-Key`` header to use the server HTTP API
    #: (``POST /api/<method>``); unset means the API is off.
    api_key: str | None = dataclasses.field(default=None, repr=False)
    #: Address ``quart-chat serve`` listens on (``HOST:PORT``).
    bind: str = "127.0.0.1:8000"
    #: Plugin names not to load, comma-separated (``-p no:NAME`` does the same for one):
    #: entry point names, ``-p`` module names, plugin file names without ``.py``.
    disable_plugins: tuple[str, ...] = ()
    #: Inbound frames per second per session (burst: twice that); more get ``rate_limited``.
    frame_rate: float = 1000.0
    #: Seconds a plugin hook may run before it is abandoned and logged.
    hook_timeout: float = 5 * SECONDS
    #: URL of an identity provider's JWKS verifying RS/ES/EdDSA client tokens by their
    #: ``kid`` (fetched off the event loop, cached; an unknown ``kid`` refetches).
    jwks_url: str | None = None
    #: Expected ``aud`` claim of client tokens (checked when set).
    jwt_audience: str | None = None
    #: Expected ``iss`` claim of client tokens (checked when set).
    jwt_issuer: str | None = None
    #: PEM file of a public key (RSA, EC or Ed25519) verifying client tokens.
    jwt_public_key: str | None = None
    #: HMAC secret for client tokens; with no token key at all (secret, public key,
    #: JWKS), development mode: a plain ``client_id`` is accepted.
    jwt_secret: str | None = None
    #: Send ``join`` / ``leave`` frames to a channel's subscribers when a session
    #: subscribes, unsubscribes or ends (also when its process dies), across processes.
    join_leave: bool = False
    #: Namespace for every Redis key and pub/sub channel this server uses.
    key_prefix: str = "quart-chat"
    #: Log line format: ``text`` (human-readable) or ``json`` (one JSON object per line).
    log_format: str = "text"
    #: Log level of the ``quart_chat`` loggers.
    log_level: str = "info"
    #: Bad frames (or rate-limited publishes) tolerated per 10 s before closing with 1008.
    max_bad_frames: int = 20
    #: Channels one session may be subscribed to at once.
    max_channels_per_session: int = 100
    #: Open sessions one client id may have at once (all processes); more get HTTP 429.
    max_connections_per_client: int = 16
    #: Largest inbound frame, in UTF-8 bytes; larger frames get ``too_large``.
    max_frame_bytes: int = 32 * KIB
    #: Largest ``limit`` a ``history`` request may ask for.
    max_history: int = 200
    #: Accepted for compatibility; no longer used: inbound frames are read only when the
    #: session is ready for them, so a client that sends ahead is slowed down by TCP.
    max_inbound_backlog: int = 256
    #: Most WebSocket frames one message may be split into; more close with 1008.
    max_message_fragments: int = 128
    #: Most missed messages a recovering ``subscribe`` replays; more: ``recovered`` false.
    max_recovery: int = 1000
    #: Longest message text, in characters.
    max_text_length: int = 4000
    #: Seconds without a heartbeat after which a server process counts as dead and a
    #: surviving one removes its clients from presence (Redis only).
    node_ttl: float = 15 * SECONDS
    #: Frames waiting for one socket before that client is disconnected as too slow.
    outbound_queue: int = 1024
    #: Size of the frames waiting for one socket (bytes of their JSON text; a character
    #: counts one) beyond which the next frame disconnects that client as too slow.
    outbound_queue_bytes: int = 1 * MIB
    #: Seconds between WebSocket pings the server sends (clients answer with pongs).
    ping_interval: float = 20 * SECONDS
    #: Seconds a client may stay silent (no frame, no pong) after a ping before it is
    #: closed as a dead peer (4001).
    ping_timeout: float = 20 * SECONDS
    #: Module paths of plugins to load (``-p``; found in the working directory too),
    #: comma-separated in the environment; ``no:NAME`` switches plugin NAME off.
    plugins: tuple[str, ...] = ()
    #: Folders whose ``*.py`` files are loaded as plugins (repeatable; separated by
    #: ``os.pathsep`` in the environment, ``:`` on Unix).
    plugins_dir: tuple[str, ...] = dataclasses.field(
        default=(), metadata={"separator": os.pathsep})
    #: Publishes one session may burst before ``publish_rate`` applies.
    publish_burst: int = 40
    #: Sustained publishes per second per session (token bucket).
    publish_rate: float = 20.0
    #: Refuse client tokens that carry no ``exp`` claim.
    require_exp: bool = False
    #: Redis URL: redis://, rediss://, redis+cluster:// or redis+sentinel:// (see the README);
    #: unset means the embedded in-process broker (one process only).
    redis_url: str | None = None
    #: Seconds between liveness probes of the Redis pub/sub connection.
    redis_probe_interval: float = 1 * SECONDS
    #: Development only: reload a plugin in place when its file (or ``-p`` module) changes.
    reload: bool = False
    #: ASGI server ``quart-chat serve`` runs: ``hypercorn``, ``uvicorn`` or ``granian``.
    server: str = "hypercorn"
    #: Seconds to wait for shutdown to close sessions before giving up.
    shutdown_timeout: float = 5 * SECONDS
    #: Seconds after which a running hook is logged as slow, with its stack (0: never).
    slow_hook_seconds: float = 1 * SECONDS
    #: Log every hook call: plugin, outcome (passed, answered, rejected, raised) and time.
    trace_plugins: bool = False
    #: Inbound bytes per second per connection, read by the server (burst: twice that);
    #: more close with 1008 (hypercorn).
    transport_byte_rate: float = 16 * MIB
    #: Inbound WebSocket frames per second per connection, fragments, pings and pongs
    #: included (burst: twice that); more close with 1008 (hypercorn).
    transport_frame_rate: float = 2000.0
    #: Raise the interpreter's garbage-collection thresholds in the serving process: a
    #: server holds many long-lived objects, which full collections walk again and again.
    tune_gc: bool = True
    #: Server processes ``quart-chat serve`` starts (needs Redis when more than one).
    workers: int = 1

    def __post_init__(self) -> None:
        # A plain string given to a tuple field in code (``Settings(plugins_dir="dir")``,
        # as before it was a tuple) means what it means in the environment.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str) and isinstance(field.default, tuple):
                object.__setattr__(self, field.name, _split(field, value))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``QUART_CHAT_*`` variables (``os.environ`` by default)."""
        environ = os.environ if environ is None else environ
        values = {
            field.name: environ[ENV_PREFIX + field.name.upper()]
            for field in dataclasses.fields(cls)
            if ENV_PREFIX + field.name.upper() in environ
        }
        return cls.from_mapping(values)

    def to_env(self) -> dict[str, str]:
        """These settings as ``QUART_CHAT_*`` variables, read back by :meth:`from_env` (how
        ``quart-chat serve`` hands them to workers that build their own app)."""
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            values[_env(field.name)] = "" if value is None else str(value)
        return values

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from a mapping of field names to values or strings."""
        return cls().replace(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied; strings are converted to the field's type."""
        hints = typing.get_type_hints(type(self))
        fields = {field.name: field for field in dataclasses.fields(self)}
        converted = {}
        for name, value in changes.items():
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}")
            converted[name] = _convert(fields[name], hints[name], value)
        settings = dataclasses.replace(self, **converted)
        settings.validate()
        return settings

    @property
    def tokens_required(self) -> bool:
        """Is any token key configured (so a handshake needs a token, not a client_id)?"""
        return bool(self.jwt_secret or self.jwt_public_key or self.jwks_url)

    def validate(self) -> None:
        """Refuse values that cannot work, naming the setting."""
        positive = (
            "frame_rate",
            "hook_timeout",
            "max_bad_frames",
            "max_channels_per_session",
            "max_connections_per_client",
            "max_frame_bytes",
            "max_history",
            "max_inbound_backlog",
            "max_message_fragments",
            "max_recovery",
            "max_text_length",
            "node_ttl",
            "outbound_queue",
            "outbound_queue_bytes",
            "ping_interval",
            "ping_timeout",
            "publish_burst",
            "publish_rate",
            "redis_probe_interval",
            "shutdown_timeout",
            "transport_byte_rate",
            "transport_frame_rate",
            "workers",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env(name)} must be greater than 0")
        if self.slow_hook_seconds < 0:
            raise ConfigError(f"{_env('slow_hook_seconds')} must be 0 (off) or more")
        if self.server not in SERVERS:
            raise ConfigError(f"{_env('server')} must be one of {', '.join(SERVERS)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"{_env('log_format')} must be text or json")
        if self.jwks_url and not self.jwks_url.startswith(("https://", "http://")):
            raise ConfigError(f"{_env('jwks_url')} must be an http(s):// URL")
        if self.jwt_public_key:
            from .tokens import public_key_algorithms

            public_key_algorithms(self.jwt_public_key)  # a bad file fails now, not per client
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                f"{_env('workers')}={self.workers} needs {_env('redis_url')}: the embedded "
                "broker lives in one process, so messages would not cross workers"
            )


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


#: How the environment spells a boolean setting.
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(variable: str, raw: str) -> bool:
    """``1 true yes on`` / ``0 false no off`` (or empty), any case; else ConfigError."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{variable}: expected true or false, got {raw!r}")


def _split(field: dataclasses.Field[Any], value: str) -> tuple[str, ...]:
    """A tuple setting from its environment form: comma-separated unless the field
    names another separator (paths: ``os.pathsep``)."""
    separator = field.metadata.get("separator", ",")
    return tuple(item.strip() for item in value.split(separator) if item.strip())


def _convert(field: dataclasses.Field[Any], hint: Any, value: Any) -> Any:
    """Turn an environment string (or an already typed value) into the field's type."""
    name = field.name
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None or value == "":
            return None
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            return _split(field, value)
        return tuple(value)
    if not isinstance(value, str):
        return value
    if hint is bool:
        return parse_bool(_env(name), value)
    try:
        return hint(value)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(hint, hint.__name__)
        raise ConfigError(f"{_env(name)}: expected {kind}, got {value!r}") from None

