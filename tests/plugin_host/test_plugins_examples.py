"""The example plugins in plugins/, each against the embedded broker and a real Redis."""

from __future__ import annotations

import re

import pytest

from .kit import WAIT, load_example, refusal

moderation = load_example("moderation")
command_bot = load_example("command_bot")
greeter = load_example("greeter")
redis_history = load_example("redis_history")
sqlite_history = load_example("sqlite_history")


def _in_lobby(server, *names):
    clients = [server.connect(name) for name in names]
    for client in clients:
        client.subscribe("lobby")
    return clients


# -- moderation ------------------------------------------------------------------------------


def test_moderation_masks_listed_words_whole_and_case_insensitively(serve, monkeypatch):
    """Listed words are masked; words that merely contain them are not."""
    monkeypatch.setenv("QUART_CHAT_PLUGIN_MODERATION_WORDS", "spam, heck")
    server = serve(moderation)
    alice, bob = _in_lobby(server, "alice", "bob")
    alice.publish("lobby", "SPAM and heck, but spammer is fine")
    assert bob.receive(WAIT).text == "S**M and h**k, but spammer is fine"


def test_moderation_reject_mode_refuses_the_message(serve, monkeypatch):
    """In reject mode the sender gets error rejected and nobody receives the message."""
    monkeypatch.setenv("QUART_CHAT_PLUGIN_MODERATION_MODE", "reject")
    server = serve(moderation)
    alice, bob = _in_lobby(server, "alice", "bob")
    error = refusal(alice.publish, "lobby", "cheap scam here")
    assert error.code == "rejected" and "not allowed" in error.message
    alice.publish("lobby", "clean")
    assert bob.receive(WAIT).text == "clean"


def test_moderation_repeat_offender_cools_down_then_may_speak_again(serve, monkeypatch):
    """After STRIKES hits a client is refused for COOLDOWN seconds; others are not."""
    monkeypatch.setenv("QUART_CHAT_PLUGIN_MODERATION_STRIKES", "2")
    monkeypatch.setenv("QUART_CHAT_PLUGIN_MODERATION_COOLDOWN", "30")
    clock = [1000.0]
    monkeypatch.setattr(moderation, "now", lambda: clock[0])
    server = serve(moderation)
    alice, bob = _in_lobby(server, "alice", "bob")
    alice.publish("lobby", "spam")
    alice.publish("lobby", "spam")  # second strike: cool-down starts
    error = refusal(alice.publish, "lobby", "sorry")
    assert error.code == "rejected" and "cooling down for 30" in error.message
    bob.publish("lobby", "bob is fine")
    clock[0] += 31
    alice.publish("lobby", "sorry")
    texts = [bob.receive(WAIT).text for _ in range(4)]
    assert texts == ["s**m", "s**m", "bob is fine", "sorry"]


def test_moderation_bad_mode_stops_startup(chat_server, monkeypatch):
    """A misconfigured plugin fails at startup, not on the first message."""
    monkeypatch.setenv("QUART_CHAT_PLUGIN_MODERATION_MODE", "shout")
    with pytest.raises(RuntimeError, match="failed to start"):
        chat_server(moderation)


# -- command bot ---------------------------------------------------------------------------


def test_command_bot_answers_help_roll_who_and_time(serve):
    """Each command gets one answer from the bot, in the channel."""
    server = serve(command_bot)
    alice, _bob = _in_lobby(server, "alice", "bob")
    answers = {}
    for command in ("!help", "!roll 2d6", "!who", "!time", "!roll d20+3"):
        alice.publish("lobby", command)
        assert alice.receive(WAIT).text == command
        reply = alice.receive(WAIT)
        assert reply.sender == "bot" and reply.bot is True
        answers[command] = reply.text
    assert "!roll" in answers["!help"] and "!who" in answers["!help"]
    rolled = re.fullmatch(r"alice rolled 2d6: (\d) \+ (\d) = (\d+)", answers["!roll 2d6"])
    assert rolled and int(rolled[1]) + int(rolled[2]) == int(rolled[3])
    assert 2 <= int(rolled[3]) <= 12
    rolled = re.fullmatch(r"alice rolled d20\+3: (\d+) \+ 3 = (\d+)", answers["!roll d20+3"])
    assert rolled and int(rolled[2]) == int(rolled[1]) + 3
    assert answers["!who"] == "in lobby: alice, bob"
    assert re.fullmatch(r"server time: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", answers["!time"])


def test_command_bot_answers_bang_roll_in_the_channel(serve):
    """Everyone in the channel sees the roll; ``!nope`` is pointed at ``!help``."""
    server = serve(command_bot)
    alice, bob = _in_lobby(server, "alice", "bob")
    alice.publish("lobby", "!roll 3d6+1")
    assert bob.receive(WAIT).text == "!roll 3d6+1"
    rolled = re.fullmatch(r"alice rolled 3d6\+1: (\d) \+ (\d) \+ (\d) \+ 1 = (\d+)",
                          bob.receive(WAIT).text)
    assert rolled and sum(map(int, rolled.groups()[:3])) + 1 == int(rolled[4])
    alice.publish("lobby", "!nope")
    bob.receive(WAIT)
    assert bob.receive(WAIT).text== "unknown command !nope; try !help"


def test_command_bot_call_roll_answers_the_caller_alone(chat_server):
    """``call roll`` answers the dice to the caller; nothing is published unless asked."""
    server = chat_server(command_bot)
    alice, bob = _in_lobby(server, "alice", "bob")
    data = alice.call("roll", {"dice": "4d8-2"})
    assert data["dice"] == "4d8-2" and len(data["rolls"]) == 4 and data["bonus"] == -2
    assert all(1 <= n <= 8 for n in data["rolls"])
    assert data["total"] == sum(data["rolls"]) - 2
    assert len(alice.call("roll")["rolls"]) == 1  # 1d6 by default
    refused = refusal(alice.call, "roll", {"dice": "lots"})
    assert refused.code == "rejected" and "try 2d6" in refused.message
    assert refusal(alice.call, "roll", {"dice": "1000d6"}).code == "rejected"
    data = alice.call("roll", {"dice": "2d6", "announce": True, "channel": "lobby"})
    message = bob.receive(WAIT)  # the first message bob sees: nothing before was posted
    assert (message.sender, message.bot) == ("bot", True)
    assert message.text.startswith("alice rolled 2d6: ")
    assert message.text.endswith(f"= {data['total']}")


def test_command_bot_explains_unknown_commands_and_bad_dice(serve):
    """Unknown commands and unreadable dice get a helpful answer, not silence."""
    server = serve(command_bot)
    (alice,) = _in_lobby(server, "alice")
    for command, expected in (("!dance", "unknown command !dance; try !help"),
                              ("!roll lots", "alice: cannot read 'lots' (usage: roll dice"),
                              ("!roll 1000d6", "1-100 dice")):
        alice.publish("lobby", command)
        alice.receive(WAIT)
        assert expected in alice.receive(WAIT).text


def test_command_bot_ignores_plain_messages(serve):
    """Only messages starting with ! are commands."""
    server = serve(command_bot)
    (alice,) = _in_lobby(server, "alice")
    alice.publish("lobby", "hello /help")
    alice.publish("lobby", "marker")
    assert [alice.receive(WAIT).text for _ in range(2)] == ["hello /help", "marker"]


def test_command_bot_name_is_configurable(serve, monkeypatch):
    """QUART_CHAT_PLUGIN_COMMAND_BOT_NAME renames the bot."""
    monkeypatch.setenv("QUART_CHAT_PLUGIN_COMMAND_BOT_NAME", "dice-master")
    server = serve(command_bot)
    (alice,) = _in_lobby(server, "alice")
    alice.publish("lobby", "/time")
    alice.receive(WAIT)
    assert alice.receive(WAIT).sender == "dice-master"


# -- greeter -------------------------------------------------------------------------------


def test_greeter_welcomes_each_subscriber_where_configured(serve, monkeypatch):
    """The greeting names the client and the channel; other channels stay quiet."""
    monkeypatch.setenv("QUART_CHAT_PLUGIN_GREETER_CHANNELS", "lobby,room:*")
    monkeypatch.setenv("QUART_CHAT_PLUGIN_GREETER_TEXT", "hi {client}, this is {channel}")
    server = serve(greeter)
    alice, bob = server.connect("alice"), server.connect("bob")
    alice.subscribe("lobby")
    assert alice.receive(WAIT).text == "hi alice, this is lobby"
    bob.subscribe("lobby")
    for client in (alice, bob):
        message = client.receive(WAIT)
        assert (message.sender, message.text) == ("greeter", "hi bob, this is lobby")
    alice.subscribe("quiet")
    alice.subscribe("room:1")
    assert alice.receive(WAIT).channel == "room:1"


def test_greeter_says_who_is_here_and_who_left(serve):
    """The greeting lists the channel; unsubscribing or disconnecting is announced,
    but not while the client is still there from another session."""
    server = serve(greeter)
    alice, bob = server.connect("alice"), server.connect("bob")
    alice.subscribe("lobby")
    assert alice.receive(WAIT).text == "welcome to lobby, alice! here: alice"
    bob.subscribe("lobby")
    assert alice.receive(WAIT).text == "welcome to lobby, bob! here: alice, bob"
    bob.unsubscribe("lobby")
    assert alice.receive(WAIT).text == "bob left #lobby"
    tab1, tab2 = server.connect("carol"), server.connect("carol")
    for tab in (tab1, tab2):
        tab.subscribe("lobby")
        assert alice.receive(WAIT).sender == "greeter"
    tab1.close()
    alice.publish("lobby", "marker")
    assert alice.receive(WAIT).text == "marker"  # carol is still here: no goodbye
    tab2.close()
    goodbye = alice.receive(WAIT)
    assert (goodbye.sender, goodbye.text) == ("greeter", "carol left #lobby")


# -- persistence: both plugins keep the same promises ----------------------------------------


@pytest.fixture(params=["redis_history", "sqlite_history"])
def keeper(request, settings, tmp_path, monkeypatch):
    """A persistence plugin, configured for this test (its own database or stream keys)."""
    if request.param == "redis_history":
        url = settings.redis_url or request.getfixturevalue("redis_url")
        monkeypatch.setenv("QUART_CHAT_PLUGIN_REDIS_HISTORY_URL", url)
        monkeypatch.setenv("QUART_CHAT_PLUGIN_REDIS_HISTORY_MAXLEN", "25")
        return redis_history
    monkeypatch.setenv("QUART_CHAT_PLUGIN_SQLITE_HISTORY_PATH", str(tmp_path / "h.sqlite3"))
    monkeypatch.setenv("QUART_CHAT_PLUGIN_SQLITE_HISTORY_KEEP", "25")
    monkeypatch.setattr(sqlite_history, "PRUNE_EVERY", 5)
    return sqlite_history


def _publish(client, channel, texts):
    return [client.publish(channel, text) for text in texts]


def test_persistence_serves_history_newest_first_with_before_paging(serve, keeper):
    """Pages of ``limit`` walk back through the channel with ``before``."""
    server = serve(keeper, publish_rate=1000, publish_burst=1000)
    (alice,) = _in_lobby(server, "alice")
    mids = _publish(alice, "lobby", [f"m{n}" for n in range(12)])
    page = alice.history("lobby", limit=5)
    assert [m.text for m in page] == ["m11", "m10", "m9", "m8", "m7"]
    assert [m.mid for m in page] == mids[::-1][:5]
    seen = [m.text for m in page]
    while page:
        page = alice.history("lobby", limit=5, before=page[-1].mid)
        seen += [m.text for m in page]
    assert seen == [f"m{n}" for n in range(11, -1, -1)]
    assert page == []


def test_persistence_keeps_channels_apart_and_bot_answers_after_questions(serve, keeper):
    """Each channel has its own history; a bot's answer is stored after the question."""
    server = serve(keeper, command_bot)
    alice = server.connect("alice")
    for channel in ("a", "b"):
        alice.subscribe(channel)
    _publish(alice, "a", ["in a"])
    _publish(alice, "b", ["/time"])
    assert [m.text for m in alice.history("a")] == ["in a"]
    b = alice.history("b")
    assert [(m.sender, m.bot) for m in b] == [("bot", True), ("alice", False)]
    assert b[1].text == "/time" and b[0].text.startswith("server time")
    assert alice.history("empty") == []


def test_persistence_is_bounded_per_channel(serve, keeper):
    """Only the newest MAXLEN / KEEP messages of a channel are kept."""
    server = serve(keeper, publish_rate=1000, publish_burst=1000)
    (alice,) = _in_lobby(server, "alice")
    _publish(alice, "lobby", [f"m{n}" for n in range(40)])
    kept = alice.history("lobby", limit=200)
    assert [m.text for m in kept] == [f"m{n}" for n in range(39, 14, -1)]


def test_persistence_stores_the_filtered_text(serve, keeper):
    """History holds what subscribers received, after the moderation filter."""
    server = serve(keeper, moderation)
    (alice,) = _in_lobby(server, "alice")
    _publish(alice, "lobby", ["no spam please"])
    assert alice.history("lobby")[0].text == "no s**m please"


def test_redis_history_answers_unavailable_while_redis_is_down(chat_server, redis_server,
                                                               redis_url, monkeypatch):
    """With its Redis stopped the plugin says ``unavailable`` (retry), not ``internal``;
    chat on the embedded broker goes on, and history works again once Redis is back."""
    monkeypatch.setenv("QUART_CHAT_PLUGIN_REDIS_HISTORY_URL", redis_url)
    server = chat_server(redis_history)
    (alice,) = _in_lobby(server, "alice")
    alice.publish("lobby", "before")
    redis_server.stop()
    assert refusal(alice.history, "lobby").code == "unavailable"
    alice.publish("lobby", "during")  # delivered; not kept (logged)
    redis_server.start()
    alice.publish("lobby", "after")
    texts = [m.text for m in alice.history("lobby")]
    assert texts == ["after"]  # a restarted private Redis keeps nothing (no persistence)
