"""HTTP and timer triggers: plugin routes on the app, and periodic functions.

``register_routes`` adds each plugin's views to the Quart app when it is built.
``register_timers`` functions run every N seconds, **once per period across all
processes**: periods are aligned to the wall clock (period ``k`` starts at ``k * N``),
and at each start every process tries to claim ``timer:<plugin>:<function>:<k>``
(:meth:`ChatService.claim`: ``SET NX`` in Redis, so exactly one process wins; a plain
set in the embedded broker's single process). The claim outlives the period, so a
process whose clock is a little behind cannot run the same period again. Each timer
gets its own :class:`Bot`, named after its plugin.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .bots import Bot
from .errors import ChatError, ConfigError

if TYPE_CHECKING:
    from quart import Quart

    from .service import ChatService

log = logging.getLogger("quart_chat.triggers")

#: What ``register_routes`` returns: (rule, view) or (rule, view, methods).
Route = tuple[str, Callable[..., Any]] | tuple[str, Callable[..., Any], list[str]]
#: What ``register_timers`` returns: (seconds, function(bot)).
TimerEntry = tuple[float, Callable[[Bot], Any]]

#: Rule prefixes the server keeps for itself.
RESERVED_PREFIXES = ("/api/", "/static/")
#: Seconds a claim outlives its period, beyond one more period (clock skew between hosts).
CLAIM_SLACK = 5.0


@dataclass(frozen=True)
class Timer:
    """One periodic function of one plugin."""

    seconds: float
    function: Callable[[Bot], Any]
    plugin_name: str
    bot_name: str

    @property
    def name(self) -> str:
        """Stable across processes: the plugin and the function's qualified name."""
        return f"{self.plugin_name}:{getattr(self.function, '__qualname__', repr(self.function))}"


def install(app: Quart, service: ChatService) -> None:
    """Add every plugin's routes to ``app`` and run every plugin's timers while it serves."""
    for plugin_name, route in service.hooks.register_routes(app):
        _add_route(app, plugin_name, route)
    timers = [_timer(plugin_name, name, entry)
              for plugin_name, name, entry in service.hooks.register_timers()]
    if timers:
        runner = Timers(service, timers)

        @app.while_serving
        async def run_timers() -> AsyncGenerator[None, None]:
            runner.start()
            yield
            await runner.stop()


def _add_route(app: Quart, plugin_name: str, route: Any) -> None:
    if not (isinstance(route, (list, tuple)) and len(route) in (2, 3)):
        raise ConfigError(f"plugin {plugin_name}: register_routes entries are (rule, view) "
                          f"or (rule, view, methods), not {route!r}")
    rule, view, *more = route
    methods = list(more[0]) if more else ["GET"]
    if not (isinstance(rule, str) and rule.startswith("/")) or not callable(view):
        raise ConfigError(f"plugin {plugin_name}: bad route {route!r}: the rule must be a "
                          "path starting with '/' and the view a function")
    taken = {existing.rule for existing in app.url_map.iter_rules()}
    if rule in taken or rule.startswith(RESERVED_PREFIXES):
        raise ConfigError(f"plugin {plugin_name}: route {rule!r} is taken by the server "
                          "or another plugin")
    app.add_url_rule(rule, f"plugin:{plugin_name}:{rule}", view, methods=methods)


def _timer(plugin_name: str, name: str, entry: Any) -> Timer:
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
        raise ConfigError(f"plugin {plugin_name}: register_timers entries are "
                          f"(seconds, function), not {entry!r}")
    seconds, function = entry
    if not isinstance(seconds, (int, float)) or seconds <= 0 or not callable(function):
        raise ConfigError(f"plugin {plugin_name}: bad timer {entry!r}: seconds must be a "
                          "positive number and function callable")
    return Timer(float(seconds), function, plugin_name, name)


class Timers:
    """The periodic tasks of one process."""

    def __init__(self, service: ChatService, timers: list[Timer]) -> None:
        self._service = service
        self.timers = timers
        self._tasks: list[asyncio.Task[None]] = []
        #: Periods this process ran, per timer name (for tests and /healthz-style checks).
        self.runs: dict[str, int] = {}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._forever(timer), name=f"timer {timer.name}")
                       for timer in self.timers]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _forever(self, timer: Timer) -> None:
        bot = Bot(self._service, timer.bot_name)
        while True:
            period = math.floor(time.time() / timer.seconds) + 1
            await asyncio.sleep(max(0.0, period * timer.seconds - time.time()))
            try:
                mine = await self._service.store.claim(f"timer:{timer.name}:{period}",
                                                       2 * timer.seconds + CLAIM_SLACK)
            except ChatError:
                log.warning("timer %s: skipped a period (the backend is unreachable)", timer.name)
                continue
            if mine:
                await self._run(timer, bot)

    async def _run(self, timer: Timer, bot: Bot) -> None:
        """One run, bounded by ``hook_timeout``; a failure is logged, the next period runs."""
        self.runs[timer.name] = self.runs.get(timer.name, 0) + 1
        timeout = self._service.settings.hook_timeout
        try:
            async with asyncio.timeout(timeout):
                result = timer.function(bot)
                if inspect.isawaitable(result):
                    await result
        except TimeoutError:
            log.error("plugin %s: timer %s timed out after %.1fs", timer.plugin_name,
                      timer.name, timeout)
        except Exception:
            log.exception("plugin %s: timer %s raised", timer.plugin_name, timer.name)
