"""filter_message and message_published: rewriting, chaining, rejection, bots, failures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from quart_chat import Message, Rejected, hookimpl

from .kit import WAIT, Recorder, refusal


class Upper:
    @hookimpl
    def filter_message(self, message):
        return message.replace(text=message.text.upper())


class Exclaim:
    @hookimpl
    async def filter_message(self, message, session):
        return message.replace(text=message.text + "!")


class NoLinks:
    @hookimpl
    def filter_message(self, message):
        if "http" in message.text.lower():
            raise Rejected("links are not allowed")


class Published:
    def __init__(self) -> None:
        self.seen = Recorder()

    @hookimpl
    def message_published(self, message, bot):
        self.seen.add("published", message)


# -- filter_message ------------------------------------------------------------------------


def test_hook_filter_message_rewrite_reaches_every_subscriber(serve):
    """A filter's changed copy is what subscribers receive, and what mid refers to."""
    server = serve(Upper())
    alice, bob = server.connect("alice"), server.connect("bob")
    for client in (alice, bob):
        client.subscribe("lobby")
    mid = alice.publish("lobby", "hi")
    for client in (alice, bob):
        message = client.receive(WAIT)
        assert (message.text, message.sender, message.mid) == ("HI", "alice", mid)


def test_hook_filter_message_filters_chain_in_call_order(serve):
    """Each filter sees the previous one's output (pluggy calls the last registered first)."""
    server = serve(Upper(), Exclaim())  # Exclaim runs first, then Upper
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert alice.receive(WAIT).text == "HI!"


def test_hook_filter_message_none_keeps_the_message_unchanged(serve):
    """A filter that returns None does not change the message."""
    server = serve(NoLinks())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "plain words")
    assert alice.receive(WAIT).text == "plain words"


def test_hook_filter_message_rejected_tells_the_sender_and_delivers_nothing(serve):
    """Rejected("reason") is error rejected with that reason; nobody gets the message."""
    published = Published()
    server = serve(NoLinks(), published)
    alice, bob = server.connect("alice"), server.connect("bob")
    for client in (alice, bob):
        client.subscribe("lobby")
    error = refusal(alice.publish, "lobby", "see http://x")
    assert (error.code, error.message) == ("rejected", "links are not allowed")
    alice.publish("lobby", "ok then")
    assert bob.receive(WAIT).text == "ok then"  # the rejected one never came first
    assert [m.text for m in published.seen.wait("published")] == ["ok then"]


def test_hook_filter_message_rejection_stops_later_filters(serve):
    """After a rejection, filters further down the chain do not run."""
    seen = Recorder()

    class Later:
        @hookimpl(trylast=True)
        def filter_message(self, message):
            seen.add("later", message.text)

    server = serve(Later(), NoLinks())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    refusal(alice.publish, "lobby", "http://spam")
    alice.publish("lobby", "fine")
    assert seen.wait("later") == ["fine"]


def test_hook_filter_message_that_raises_is_internal_and_the_session_survives(serve, caplog):
    """A crashing filter: the sender gets internal, the log names the plugin, chat goes on."""

    class Crashing:
        @hookimpl
        def filter_message(self, message):
            if message.text == "crash":
                raise ValueError("bad regex")

    server = serve(Crashing())
    alice, bob = server.connect("alice"), server.connect("bob")
    for client in (alice, bob):
        client.subscribe("lobby")
    assert refusal(alice.publish, "lobby", "crash").code == "internal"
    assert "plugin Crashing: hook filter_message raised" in caplog.text
    alice.publish("lobby", "after")
    assert bob.receive(WAIT).text == "after"


def test_hook_filter_message_may_not_change_channel_or_sender(serve, caplog):
    """A filter that reroutes or impersonates is refused as a plugin failure."""

    class Forger:
        @hookimpl
        def filter_message(self, message):
            if message.text == "reroute":
                return message.replace(channel="elsewhere")
            if message.text == "forge":
                return message.replace(sender="admin")
            if message.text == "junk":
                return "not a message"

    server = serve(Forger())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.subscribe("elsewhere")
    for text in ("reroute", "forge", "junk"):
        assert refusal(alice.publish, "lobby", text).code == "internal"
    assert "filter_message may not change channel" in caplog.text
    assert "filter_message may not change sender" in caplog.text
    assert "filter_message returned str" in caplog.text
    alice.publish("lobby", "fine")
    assert alice.receive(WAIT).text == "fine"


def test_hook_filter_message_past_the_timeout_other_clients_stay_responsive(serve, caplog):
    """A filter that sleeps past hook_timeout: its sender gets internal after the timeout,
    while the server keeps serving everybody else in the meantime."""
    entered, cancelled = threading.Event(), threading.Event()
    running = threading.Event()

    class Sleepy:
        @hookimpl
        async def filter_message(self, message):
            if message.text == "slow":
                entered.set()
                running.set()
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    running.clear()
                    cancelled.set()
                    raise

    server = serve(Sleepy(), hook_timeout=3.0)  # a margin far above the others' few ms
    alice, bob, carol = (server.connect(name) for name in ("alice", "bob", "carol"))
    for client in (alice, bob, carol):
        client.subscribe("lobby")
    slow = concurrent.futures.ThreadPoolExecutor(1)  # alice waits for her reply meanwhile
    slow_reply = slow.submit(refusal, alice.publish, "lobby", "slow")
    assert entered.wait(10)
    # While alice's filter sleeps, bob and carol chat and get answers.
    bob.ping()
    bob.publish("lobby", "not stuck")
    assert carol.receive(WAIT).text == "not stuck"
    carol.presence("lobby")
    assert running.is_set(), "the slow filter finished before the others were served"
    assert slow_reply.result(WAIT).code == "internal"
    slow.shutdown()
    assert cancelled.wait(10)
    assert "plugin Sleepy: hook filter_message timed out" in caplog.text
    alice.publish("lobby", "alice is back")


# -- message_published ---------------------------------------------------------------------


def test_hook_message_published_runs_once_per_message_with_the_final_text(serve):
    """message_published sees each accepted message once, as filtered."""
    published = Published()
    server = serve(published, Upper())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    mids = [alice.publish("lobby", f"m{n}") for n in range(3)]
    seen = published.seen.wait("published", 3)
    assert [(m.mid, m.text, m.sender, m.bot) for m in seen] == [
        (mid, f"M{n}", "alice", False) for n, mid in enumerate(mids)]
    assert all(isinstance(m, Message) for m in seen)


def test_hook_message_published_bot_reply_is_delivered_and_published(serve):
    """bot.reply goes through delivery and message_published like any message."""

    class Echo:
        BOT_NAME = "echo"

        @hookimpl
        async def message_published(self, message, bot):
            await bot.reply(message, f"you said {message.text}")

    published = Published()
    server = serve(published, Echo())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    first, second = alice.receive(WAIT), alice.receive(WAIT)
    assert (first.sender, first.text) == ("alice", "hi")
    assert (second.sender, second.text, second.bot) == ("echo", "you said hi", True)
    assert [(m.sender, m.bot) for m in published.seen.wait("published", 2)] == [
        ("alice", False), ("echo", True)]


def test_hook_message_published_two_bots_do_not_answer_each_other(serve):
    """Bots ignore bot messages by default: two echo bots answer each human message once."""

    def echo(name):
        class Echo:
            BOT_NAME = name

            @hookimpl
            async def message_published(self, message, bot):
                await bot.reply(message, f"{name}: {message.text}")

        Echo.__name__ = name
        return Echo()

    published = Published()
    server = serve(published, echo("ping-bot"), echo("pong-bot"))
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "one")
    alice.publish("lobby", "two")
    # Every message_published (bot answers included) ran before the publish result.
    senders = [m.sender for m in published.seen.of("published")]
    assert sorted(senders) == ["alice", "alice", "ping-bot", "ping-bot", "pong-bot", "pong-bot"]


def test_hook_message_published_answer_bots_opt_in(serve):
    """A plugin that sets bot.answer_bots = True does hear other bots."""

    class Announcer:
        BOT_NAME = "announcer"

        @hookimpl
        async def message_published(self, message, bot):
            if message.text == "go":
                await bot.reply(message, "announcement")

    class Listener:
        BOT_NAME = "listener"

        @hookimpl
        async def message_published(self, message, bot):
            bot.answer_bots = True
            if message.sender == "announcer":
                await bot.reply(message, "heard it")

    server = serve(Listener(), Announcer())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "go")
    texts = [alice.receive(WAIT).text for _ in range(3)]
    assert texts == ["go", "announcement", "heard it"]


def test_hook_message_published_that_raises_does_not_fail_the_publish(serve, caplog):
    """The message was delivered, so the sender gets its result; the log names the plugin."""

    class Crashing:
        @hookimpl
        def message_published(self):
            raise OSError("disk full")

    published = Published()
    server = serve(Crashing(), published)
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "hi")
    assert alice.receive(WAIT).text == "hi"
    assert len(published.seen.wait("published")) == 1  # the other plugin still ran
    assert "plugin Crashing: hook message_published raised" in caplog.text


def test_hook_message_published_bots_in_a_loop_are_stopped(serve, caplog):
    """Two bots that answer bots forever are cut off after MAX_BOT_CHAIN answers."""
    from quart_chat.service import MAX_BOT_CHAIN

    def chatterbox(name):
        class Chatterbox:
            BOT_NAME = name

            @hookimpl
            async def message_published(self, message, bot):
                bot.answer_bots = True
                if message.sender != name:
                    await bot.reply(message, "and another thing")

        Chatterbox.__name__ = name
        return Chatterbox()

    published = Published()
    server = serve(published, chatterbox("a"), chatterbox("b"), publish_rate=1000)
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "start")
    assert len(published.seen.of("published")) == MAX_BOT_CHAIN + 1
    assert "bot messages answered one message" in caplog.text
    alice.ping()


def test_hook_filter_message_own_timeout_error_is_reported_as_raised(serve, caplog):
    """A plugin's own TimeoutError (say from its database) is not blamed on hook_timeout."""

    class Flaky:
        @hookimpl
        async def filter_message(self, message):
            raise TimeoutError("database did not answer")

    server = serve(Flaky())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    assert refusal(alice.publish, "lobby", "hi").code == "internal"
    assert "plugin Flaky: hook filter_message raised" in caplog.text
    assert "timed out" not in caplog.text
