"""A bot in every hook that can act, and a bot outside hooks (``bot_for``)."""

from __future__ import annotations

from quart_chat import Bot, bot_for, hookimpl

from .kit import WAIT


class Goodbye:
    """The goodbye bot of the docs, three lines."""

    @hookimpl
    async def client_disconnected(self, session, bot):
        for channel in session.channels:
            await bot.publish(channel, f"{session.client_id} left #{channel}")


def test_hook_client_disconnected_goodbye_bot_in_three_lines(serve):
    """``session.channels`` still names the channels, and ``bot`` publishes there."""
    server = serve(Goodbye())
    alice, bob = server.connect("alice"), server.connect("bob")
    for channel in ("lobby", "games"):
        alice.subscribe(channel)
    bob.subscribe("lobby")
    bob.close()
    message = alice.receive(timeout=WAIT)
    assert (message.channel, message.sender, message.text, message.bot) == (
        "lobby", "Goodbye", "bob left #lobby", True)


def test_hook_client_connected_gets_a_bot(serve):
    """``bot`` in client_connected publishes as the plugin (here: an audit channel)."""

    class Audit:
        BOT_NAME = "audit"

        @hookimpl
        async def client_connected(self, session, bot):
            if session.client_id != "watcher":  # it may still be subscribing
                await bot.publish("audit", f"{session.client_id} connected")

    server = serve(Audit())
    watcher = server.connect("watcher")
    watcher.subscribe("audit")
    server.connect("alice")
    message = watcher.receive(timeout=WAIT)
    assert (message.sender, message.text) == ("audit", "alice connected")


def test_hook_client_unsubscribed_gets_a_bot(serve):
    """``bot`` in client_unsubscribed can tell the channel who left."""

    class Farewell:
        @hookimpl
        async def client_unsubscribed(self, session, channel, bot):
            await bot.publish(channel, f"bye {session.client_id}")

    server = serve(Farewell())
    alice, bob = server.connect("alice"), server.connect("bob")
    alice.subscribe("lobby")
    bob.subscribe("lobby")
    bob.unsubscribe("lobby")
    message = alice.receive(timeout=WAIT)
    assert (message.sender, message.text) == ("Farewell", "bye bob")


def test_hook_bots_keep_working_for_plugins_that_do_not_ask_for_one(serve):
    """``bot`` stays optional: implementations without it get only what they name."""
    seen = []

    class Plain:
        @hookimpl
        def client_connected(self, session):
            seen.append(("connected", session.client_id))

        @hookimpl
        def client_unsubscribed(self, channel):
            seen.append(("unsubscribed", channel))

        @hookimpl
        def client_disconnected(self, session):
            seen.append(("disconnected", session.client_id))

    server = serve(Plain())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.unsubscribe("lobby")
    alice.close()
    server.stop()
    assert seen == [("connected", "alice"), ("unsubscribed", "lobby"),
                    ("disconnected", "alice")]


def test_bot_for_publishes_outside_hooks(chat_server):
    """``bot_for(app, name)`` gives code outside hooks (a task, a route) a bot whose
    messages run through the hooks like any bot's."""
    published = []

    class Keeper:
        @hookimpl
        def message_published(self, message):
            published.append((message.sender, message.text))

    server = chat_server(Keeper())
    alice = server.connect("alice")
    alice.subscribe("ops")
    bot = bot_for(server.thread.app, "deploy bot")
    assert isinstance(bot, Bot) and bot.name == "deploy-bot"
    sent = server.thread.call(bot.publish("ops", "v2 is out"))
    message = alice.receive(timeout=WAIT)
    assert (message.sender, message.text, message.mid) == ("deploy-bot", "v2 is out", sent.mid)
    assert published == [("deploy-bot", "v2 is out")]
