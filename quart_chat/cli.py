"""The ``quart-chat`` command: ``serve`` runs hypercorn (or uvicorn, granian), ``plugins`` lists,
``publish`` posts a message through the server HTTP API, ``token`` signs a development token.

Every ``serve`` option is generated from :class:`Settings`, defaults to "not given", and
overrides the ``QUART_CHAT_*`` environment only when given on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator
from typing import Any

import click

from .config import ENV_PREFIX, Settings
from .errors import ConfigError
from .version import __version__

log = logging.getLogger("quart_chat")

#: Connections the kernel may queue before the server accepts them (see _hypercorn_config).
LISTEN_BACKLOG = 2048

#: Short names for settings that people type often.
SHORT_FLAGS = {"plugins": ("-p", "--plugin"), "workers": ("-w", "--workers"),
               "bind": ("-b", "--bind")}


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per Settings field, documented from the field's comment."""
    hints = typing.get_type_hints(Settings)
    docs = _field_docs()
    for field in reversed(dataclasses.fields(Settings)):
        flags = SHORT_FLAGS.get(field.name, (f"--{field.name.replace('_', '-')}",))
        hint = hints[field.name]
        multiple = typing.get_origin(hint) is tuple
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        kind = str if multiple else {int: int, float: float}.get(base, str)
        default = field.default if not multiple else ",".join(field.default)
        if base is bool:
            default = str(field.default).lower()
        env = ENV_PREFIX + field.name.upper()
        text = f"{docs.get(field.name, '')} [env {env}; default {default or 'unset'}]"
        if base is bool:  # a switch (--require-exp / --no-require-exp); absent: the environment
            flags = (f"{flags[0]}/--no-{flags[0][2:]}",)
            command = click.option(*flags, field.name, default=None, help=text)(command)
            continue
        command = click.option(*flags, field.name, type=kind, multiple=multiple, default=None,
                               help=text)(command)
    return command


def _field_docs() -> dict[str, str]:
    """The ``#:`` comment above each field in config.py, used as the option's help."""
    import inspect

    from . import config

    docs, pending = {}, []
    for line in inspect.getsource(config.Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif pending and ":" in stripped:
            docs[stripped.split(":", 1)[0]] = " ".join(pending).replace("``", "'")
            pending = []
    return docs


def settings_from(options: dict[str, Any]) -> Settings:
    """Environment settings, overridden by the options actually given."""
    given = {k: v for k, v in options.items() if v is not None and v != ()}
    return Settings.from_env().replace(**given)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="quart-chat")
def main() -> None:
    """quart-chat: a real-time chat server over WebSockets and Redis pub/sub."""


@main.command()
@_setting_options
def serve(**options: Any) -> None:
    """Run the server with hypercorn, or --server uvicorn|granian (the embedded broker
    unless --redis-url is given)."""
    try:
        settings = settings_from(options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _configure_logging(settings)
    if settings.server != "hypercorn":
        from . import runners

        if importlib.util.find_spec(settings.server) is None:
            raise click.UsageError(f"--server {settings.server} needs {settings.server} "
                                   "installed: pip install 'quart-chat[servers]'")
        sys.exit(runners.run_uvicorn(settings) if settings.server == "uvicorn"
                 else runners.run_granian(settings))
    config = _hypercorn_config(settings)
    if settings.workers == 1:
        sys.exit(run_worker(settings, config))
    sys.exit(_supervise(settings, config))


@main.command("plugins")
@_setting_options
def plugins_command(**options: Any) -> None:
    """List the plugins that would load, and the hooks each implements."""
    from .plugins import describe, make_plugin_manager, origin_of

    try:
        pm = make_plugin_manager(settings_from(options))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    rows = describe(pm)
    if not rows:
        click.echo("no plugins loaded")
    for name, hooks in rows:
        click.echo(f"{name}\n    hooks: {', '.join(hooks) or '(none)'}\n"
                   f"    from: {origin_of(pm, name)}")


@main.command("publish")
@click.argument("channel")
@click.argument("text")
@click.option("--url", envvar="QUART_CHAT_URL", default="http://127.0.0.1:8000",
              show_default=True, help="Base URL of the server [env QUART_CHAT_URL]")
@click.option("--api-key", envvar="QUART_CHAT_API_KEY", required=True,
              help="The server's API key [env QUART_CHAT_API_KEY]")
@click.option("--sender", envvar="QUART_CHAT_SENDER", default="api", show_default=True,
              help="Sender name shown with the message [env QUART_CHAT_SENDER]")
def publish_command(channel: str, text: str, url: str, api_key: str, sender: str) -> None:
    """Publish TEXT to CHANNEL through the server HTTP API; prints the message id."""
    from .errors import ChatError
    from .server_api import ServerAPI

    try:
        mid = ServerAPI(url, api_key).publish(channel, text, sender=sender)
    except ChatError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    except OSError as exc:  # urllib's URLError included
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    click.echo(mid)


@main.command("token")
@click.argument("subject")
@click.option("--channels", default="",
              help="Channels the token allows, comma-separated; 'prefix*' globs (default: all).")
@click.option("--ttl", default="1h", show_default=True,
              help="Lifetime: seconds, or a number with s, m, h or d.")
@click.option("--jwt-secret", "jwt_secret", default=None,
              help=f"HMAC secret to sign with [env {ENV_PREFIX}JWT_SECRET].")
def token_command(subject: str, channels: str, ttl: str, jwt_secret: str | None) -> None:
    """Print a signed development token (HS256) for client id SUBJECT."""
    from .tokens import issue

    secret = jwt_secret or os.environ.get(f"{ENV_PREFIX}JWT_SECRET")
    if not secret:
        raise click.UsageError(f"no secret to sign with: set {ENV_PREFIX}JWT_SECRET or pass "
                               "--jwt-secret (tokens from an identity provider are signed "
                               "by the provider, not here)")
    allowed = tuple(c.strip() for c in channels.split(",") if c.strip())
    click.echo(issue(secret, subject, _duration(ttl), allowed))


def _duration(text: str) -> float:
    """Seconds in ``90``, ``30s``, ``15m``, ``1h`` or ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise click.BadParameter(f"{text!r}: use seconds, or a number with s, m, h or d",
                                 param_hint="--ttl") from None
    if seconds <= 0:
        raise click.BadParameter("must be greater than 0", param_hint="--ttl")
    return seconds


def _configure_logging(settings: Settings) -> None:
    from .logs import configure

    configure(settings)


def _hypercorn_config(settings: Settings) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [settings.bind]
    config.graceful_timeout = settings.shutdown_timeout
    # Frames a little over the limit get a ``too_large`` error frame from the session;
    # hypercorn closes with 1009 only beyond this (it counts characters, not bytes).
    config.websocket_max_message_size = settings.max_frame_bytes * 4
    # No websocket_ping_interval: quart_chat.liveness pings every socket from one sweep
    # (hypercorn's pinging is a task per socket); live clients answer with pongs, quiet
    # dead peers are closed (4001).
    # A reconnect storm (every client of a restarted server at once) overflows
    # hypercorn's default queue of 100 unaccepted connections, and each overflowed
    # client waits a SYN retry (1 s, then 3 s...); uvicorn's default, capped by the
    # kernel's net.core.somaxconn.
    config.backlog = LISTEN_BACKLOG
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def run_worker(settings: Settings, config: Any, sockets: Any = None,
               stop_event: Any = None) -> int:
    """Serve in this process until SIGINT/SIGTERM (or ``stop_event``); the exit status."""
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import LifespanFailureError, wrap_app

    from .app import chat_service, create_app

    _configure_logging(settings)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        click.echo(f"quart-chat: {exc}", err=True)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for name in ("SIGINT", "SIGTERM"):
            loop.add_signal_handler(getattr(signal, name), stop.set)
        watcher = None
        if stop_event is not None:
            watcher = asyncio.create_task(_watch(stop_event, stop))

        async def shutdown_trigger() -> None:
            await stop.wait()
            log.info("shutting down: closing sessions with 1001")
            await chat_service(app).close_sessions(1001, "server shutting down")

        try:
            await worker_serve(wrap_app(app, config.wsgi_max_body_size, "asgi"), config,
                               sockets=sockets, shutdown_trigger=shutdown_trigger)
        finally:
            if watcher is not None:
                watcher.cancel()

    try:
        _event_loop_runner()(main())
    except LifespanFailureError as exc:
        reason = chat_service(app).startup_failure or exc.__cause__ or exc
        click.echo(f"quart-chat: startup failed: {reason}", err=True)
        return 1
    except OSError as exc:
        click.echo(f"quart-chat: cannot listen on {settings.bind}: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _watch(stop_event: Any, stop: asyncio.Event) -> None:
    # A multiprocessing.Event from the supervisor cannot be awaited: poll it.
    while not stop_event.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    stop.set()


def _event_loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _supervise(settings: Settings, config: Any) -> int:
    """Run ``workers`` processes on shared sockets; stop them all on a signal."""
    with _metrics_dir():
        return _run_workers(settings, config)


@contextlib.contextmanager
def _metrics_dir() -> Iterator[None]:
    """A PROMETHEUS_MULTIPROC_DIR for the workers (a temporary one unless already set)."""
    from .metrics import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="quart-chat-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder  # inherited by the spawned workers
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


def _run_workers(settings: Settings, config: Any) -> int:
    context = multiprocessing.get_context("spawn")
    sockets = config.create_sockets()
    stop_event = context.Event()
    workers = [
        context.Process(target=_worker_main, args=(settings, config, sockets, stop_event),
                        name=f"quart-chat worker {n}")
        for n in range(settings.workers)
    ]

    def on_signal(signum: int, frame: Any) -> None:
        stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for worker in workers:
        worker.start()
    log.info("started %d workers on %s", len(workers), settings.bind)
    status = 0
    exited: set[int | None] = set()
    while any(w.is_alive() for w in workers):
        for worker in workers:
            worker.join(0.2)
            if worker.exitcode is not None and worker.pid not in exited:
                exited.add(worker.pid)
                _worker_exited(worker.pid)
            if worker.exitcode not in (None, 0) and not stop_event.is_set():
                log.error("%s exited with %s; stopping the others", worker.name, worker.exitcode)
                status = 1
                stop_event.set()
    for worker in workers:
        if worker.pid not in exited:
            _worker_exited(worker.pid)
    for sock in sockets.insecure_sockets:
        sock.close()
    return status


def _worker_exited(pid: int | None) -> None:
    from .metrics import process_exited

    if pid is not None:
        process_exited(pid)


def _worker_main(settings: Settings, config: Any, sockets: Any, stop_event: Any) -> None:
    sys.exit(run_worker(settings, config, sockets, stop_event))
