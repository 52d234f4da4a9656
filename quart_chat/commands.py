"""Bot commands: a small router from ``!name args`` messages to functions, with ``!help``.

::

    from quart_chat import BadArguments, Commands, hookimpl

    commands = Commands(prefix="!")

    @commands.command("roll", help="roll dice: !roll 2d6")
    def roll(args):
        if not args.isdigit():
            raise BadArguments(f"cannot read {args!r}")    # the sender is told, with help
        return f"rolled {random.randint(1, int(args))}"

    @hookimpl
    async def message_published(message, bot):
        await commands.handle(message, bot)

A command function takes any of ``message`` (the :class:`Message`), ``args`` (the text
after the name, stripped) and ``bot`` (the hook's :class:`Bot`), by name, and returns
the answer's text (None: no answer). It may be ``async def``; a plain ``def`` runs on
the event loop, so keep it quick.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .bots import Bot
    from .protocol import Message

__all__ = ["BadArguments", "Commands"]

F = TypeVar("F", bound=Callable[..., Any])
#: What a command function may ask for, by parameter name.
OFFERED = ("message", "args", "bot")


class BadArguments(ValueError):
    """Raise from a command when its arguments cannot work: the sender is told why,
    with the command's help."""


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    function: Callable[..., Any]
    wants: tuple[str, ...]


class Commands:
    """The commands of one bot, and the ``help`` command that lists them."""

    def __init__(self, prefix: str | tuple[str, ...] = "!", *, help_command: str = "help") -> None:
        prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        if not prefixes or any(not p or any(c.isspace() for c in p) for p in prefixes):
            raise ValueError("a command prefix is one or more non-space characters")
        #: The prefixes a command may start with; answers use the one the sender used.
        self.prefixes = prefixes
        self.prefix = prefixes[0]
        self.help_command = help_command
        self._commands: dict[str, Command] = {}

    def command(self, name: str, *, help: str = "") -> Callable[[F], F]:
        """Register the decorated function as command ``name`` (matched case-insensitively)."""

        def register(function: F) -> F:
            key = name.lower()
            if key in self._commands or key == self.help_command:
                raise ValueError(f"command {self.prefix}{name} is already defined")
            wants = tuple(inspect.signature(function).parameters)
            unknown = [param for param in wants if param not in OFFERED]
            if unknown:
                raise TypeError(f"command {self.prefix}{name}: cannot pass {', '.join(unknown)}"
                                f"; a command takes any of {', '.join(OFFERED)}")
            self._commands[key] = Command(name, help, function, wants)
            return function

        return register

    def parse(self, text: str) -> tuple[str, str] | None:
        """``(name, args)`` of a command message, lower-cased name; None if it is not one."""
        split = self._split(text)
        return None if split is None else split[1:]

    def _split(self, text: str) -> tuple[str, str, str] | None:
        text = text.strip()
        for prefix in self.prefixes:
            if text.startswith(prefix):
                name, _, args = text[len(prefix):].partition(" ")
                return (prefix, name.lower(), args.strip()) if name else None
        return None

    def help_text(self, prefix: str | None = None) -> str:
        """The answer to ``!help``: every command with its help (written with ``prefix``)."""
        p = prefix or self.prefix
        entries = [f"{p}{self.help_command} (this list)"]
        for command in self._commands.values():
            entries.append(f"{p}{command.name}" + (f" — {command.help}" if command.help else ""))
        return "commands: " + "; ".join(entries)

    async def answer(self, message: Message, bot: Bot | None = None) -> str | None:
        """The answer to ``message``: None when it is no command (or the command says
        nothing); a list of commands for an unknown one; the reason and the command's
        help, addressed to the sender, for bad arguments."""
        split = self._split(message.text)
        if split is None:
            return None
        prefix, name, args = split
        if name == self.help_command:
            return self.help_text(prefix)
        command = self._commands.get(name)
        if command is None:
            return f"unknown command {prefix}{name}; try {prefix}{self.help_command}"
        offered = {"message": message, "args": args, "bot": bot}
        try:
            result = command.function(**{param: offered[param] for param in command.wants})
            if inspect.isawaitable(result):
                result = await result
        except BadArguments as exc:
            usage = f" (usage: {command.help})" if command.help else ""
            return f"{message.sender}: {exc}{usage}"
        return None if result is None else str(result)

    async def handle(self, message: Message, bot: Bot) -> bool:
        """Answer ``message`` through ``bot`` if it is a command; True if it was one.

        Call it from ``message_published(message, bot)``. Messages from bots are left
        alone (unless ``bot.answer_bots``), so two command bots cannot loop.
        """
        if bot.muted or self.parse(message.text) is None:
            return False
        answer = await self.answer(message, bot)
        if answer is not None:
            await bot.reply(message, answer)
        return True
