"""Commands: the bot command router (``!name args``, ``!help``, bad arguments)."""

from __future__ import annotations

import asyncio

import pytest

from quart_chat import BadArguments, Commands, Message, hookimpl

from .kit import WAIT


def _message(text: str, sender: str = "alice") -> Message:
    return Message(channel="lobby", sender=sender, text=text, ts=1.0, mid="1")


def _dice() -> Commands:
    commands = Commands(prefix="!")

    @commands.command("roll", help="roll dice: !roll 2d6")
    def roll(args):
        if args != "2d6":
            raise BadArguments(f"cannot read {args!r}")
        return "7"

    @commands.command("echo")
    async def echo(message, args):
        return f"{message.sender} said {args}"

    @commands.command("quiet")
    def quiet():
        return None

    return commands


@pytest.mark.parametrize(("text", "answer"), [
    ("!roll 2d6", "7"),
    ("!ROLL   2d6  ", "7"),
    ("!echo hi there", "alice said hi there"),
    ("!roll lots", "alice: cannot read 'lots' (usage: roll dice: !roll 2d6)"),
    ("!dance", "unknown command !dance; try !help"),
    ("!help", "commands: !help (this list); !roll — roll dice: !roll 2d6; !echo; !quiet"),
    ("!quiet", None),
    ("roll 2d6", None),
    ("!", None),
])
def test_commands_parse_run_and_explain(text, answer):
    assert asyncio.run(_dice().answer(_message(text))) == answer


def test_commands_refuse_a_duplicate_and_a_parameter_they_cannot_pass():
    commands = _dice()
    with pytest.raises(ValueError, match="already defined"):
        commands.command("roll")(lambda: None)
    with pytest.raises(TypeError, match="cannot pass user"):
        commands.command("greet")(lambda user: None)


def test_commands_answer_in_the_channel_through_the_bot_and_ignore_bots(serve):
    """A bot built on Commands answers commands, and not its own (or other bots') answers."""
    commands = _dice()

    class DiceBot:
        @hookimpl
        async def message_published(self, message, bot):
            await commands.handle(message, bot)

    server = serve(DiceBot())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "!help")
    assert alice.receive(WAIT).text == "!help"
    answer = alice.receive(WAIT)
    assert answer.bot and answer.text.startswith("commands: !help")
    alice.publish("lobby", "!roll 3")
    alice.receive(WAIT)
    assert alice.receive(WAIT).text.startswith("alice: cannot read '3'")
    alice.assert_quiet(0.2)
