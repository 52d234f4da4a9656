"""ChatWidget driven like a person would (Enter, Join, Leave) against a real server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import ipywidgets
import pytest

from quart_chat import Rejected, hookimpl
from quart_chat.bots import Bot
from quart_chat.client import ChatClient
from quart_chat.config import Settings
from quart_chat.protocol import Message
from quart_chat.testing import ServerThread, free_port
from quart_chat.widgets import ChatWidget, render_message, sender_color

from .helpers import wait_until
from .test_client import History

WAIT = 10.0


class EchoBot:
    """Answers ``!echo x`` with ``x`` as a bot, and rejects the word ``forbidden``."""

    BOT_NAME = "echo"

    @hookimpl
    async def message_published(self, message: Message, bot: Bot) -> None:
        if message.text.startswith("!echo "):
            await bot.reply(message, message.text[6:])

    @hookimpl
    def filter_message(self, message: Message) -> None:
        if "forbidden" in message.text:
            raise Rejected("that word is not allowed")


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(Settings(log_level="critical"), plugins=[EchoBot()]) as running:
        yield running


@pytest.fixture
def widget(server: ServerThread) -> Iterator[Callable[..., ChatWidget]]:
    made: list[ChatWidget] = []

    def make(client_id: str, **options: object) -> ChatWidget:
        chat = ChatWidget(server.ws_url, client_id, **options)  # type: ignore[arg-type]
        made.append(chat)
        return chat

    yield make
    for chat in made:
        chat.close()


def press_enter(text_box: ipywidgets.Text, chat: ChatWidget, text: str) -> None:
    """What the browser does: sync the value as typed, then send a submit event."""
    text_box.value = text
    handler = chat._on_input_msg if text_box is chat.input else chat._on_join_msg
    handler(text_box, {"event": "submit"}, [])


def test_enter_sends_and_both_logs_show_sender_and_text(widget) -> None:
    """Enter publishes to the shown channel, clears the box, and both windows show it."""
    alice, bob = widget("alice"), widget("bob")
    press_enter(alice.input, alice, "hello <bob>")
    assert alice.input.value == ""
    for chat in (alice, bob):
        wait_until(lambda chat=chat: "hello &lt;bob&gt;" in chat.message_log.value, WAIT)
        assert ">alice</b>" in chat.message_log.value
    assert alice.error_line.value == ""


def test_the_send_button_sends_too(widget) -> None:
    alice = widget("alice")
    alice.input.value = "by button"
    alice.send_button.click()
    wait_until(lambda: "by button" in alice.message_log.value, WAIT)


def test_blank_text_is_not_sent(widget) -> None:
    alice = widget("alice")
    assert alice.send("   ") is False
    assert alice.client.pending() == 0


def test_bot_messages_look_different(widget) -> None:
    """A bot's answer carries a BOT badge and its own row style; people's do not."""
    alice = widget("alice")
    alice.send("!echo beep")
    # the bot's answer, not the question (which also holds "beep")
    wait_until(lambda: '<div class="qc-msg qc-bot"' in alice.message_log.value, WAIT)
    rows = alice.message_log.value.split('<div class="qc-msg')
    bot_rows = [row for row in rows if row.startswith(' qc-bot"')]
    assert len(bot_rows) == 1 and "BOT" in bot_rows[0] and ">echo</b>" in bot_rows[0]
    assert all("BOT" not in row for row in rows if "!echo beep" in row)


def test_server_errors_show_inline_not_as_tracebacks(widget) -> None:
    alice = widget("alice")
    assert alice.join("no spaces allowed") is False
    assert "invalid_channel" in alice.error_line.value
    assert alice.send("a forbidden word") is False
    assert "rejected" in alice.error_line.value and "not allowed" in alice.error_line.value
    assert alice.send("fine") is True
    assert alice.error_line.value == ""


def test_member_list_shows_the_channel_members(widget) -> None:
    alice, bob = widget("alice"), widget("bob")
    alice.refresh_members()
    assert ">alice</b>" in alice.member_list.value and "bob" in alice.member_list.value
    assert "members · 2" in alice.member_list.value
    assert "members · 2" in bob.member_list.value


def test_join_pick_and_leave_channels(widget) -> None:
    """Joining adds to the picker and shows the channel; leaving falls back to another."""
    alice = widget("alice")
    press_enter(alice.join_box, alice, "dev")
    assert alice.channel == "dev" and alice.channel_picker.options == ("dev", "lobby")
    assert alice.join_box.value == ""
    alice.send("in dev")
    wait_until(lambda: "in dev" in alice.message_log.value, WAIT)
    alice.channel_picker.value = "lobby"
    assert alice.channel == "lobby" and "in dev" not in alice.message_log.value
    alice.leave()
    assert alice.channel == "dev" and alice.client.subscriptions == ["dev"]
    assert "in dev" in alice.message_log.value


def test_a_widget_wraps_an_existing_client(server: ServerThread) -> None:
    with ChatClient(server.ws_url, "carol") as carol:
        carol.subscribe("news")
        chat = ChatWidget(carol, channel=None)
        assert chat.channel is None and chat.channel_picker.options == ("news",)
        assert chat.send("nowhere") is False and "join a channel" in chat.error_line.value
        chat.show("news")
        assert chat.send("hi") is True


def test_two_widgets_sit_side_by_side(widget) -> None:
    row = ipywidgets.HBox([widget("alice"), widget("bob")])
    assert [chat.me for chat in row.children] == ["alice", "bob"]


def test_header_follows_the_connection_through_a_restart() -> None:
    port = free_port()
    server = ServerThread(Settings(log_level="critical"), port=port).start()
    chat = ChatWidget(ChatClient(server.ws_url, "alice", reconnect_delay=0.05))
    try:
        assert "connected" in chat.header.value
        server.stop()
        wait_until(lambda: "reconnecting" in chat.header.value, WAIT)
        server = ServerThread(Settings(log_level="critical"), port=port).start()
        wait_until(lambda: "● connected" in chat.header.value, WAIT)
        assert chat.client.subscriptions == ["lobby"]
    finally:
        chat.close()
        server.stop()


def test_render_message_escapes_and_shows_local_time() -> None:
    ts = 1_764_000_000.0
    message = Message(channel="c", sender="eve", text="<b>x</b>", ts=ts, mid="m")
    row = render_message(message)
    assert "&lt;b&gt;x&lt;/b&gt;" in row
    assert time.strftime("%H:%M:%S", time.localtime(ts)) in row
    assert sender_color("eve") in row
    assert sender_color("eve") == sender_color("eve")


class Greeter:
    @hookimpl
    async def client_subscribed(self, session: object, channel: str, bot: Bot) -> None:
        await bot.publish(channel, f"welcome to {channel}")


def test_a_greeting_sent_right_after_joining_is_in_the_log() -> None:
    """Messages that beat the subscribe reply to the widget are logged, not dropped."""
    with ServerThread(Settings(log_level="critical"), plugins=[Greeter()]) as server:
        for n in range(20):
            chat = ChatWidget(server.ws_url, f"guest{n}", channel=f"room{n}")
            try:
                wait_until(lambda chat=chat: len(chat.messages()) == 1, WAIT)
                assert chat.messages()[0].text == f"welcome to room{n}"
            finally:
                chat.close()


class Journal(History):
    """Keeps every message: serves ``history`` and ``recover`` (shared by servers in a test)."""

    @hookimpl
    def recover(self, channel: str, since: str, limit: int) -> list[Message] | None:
        mids = [m.mid for m in self.kept]
        if since not in mids:
            return None
        return [m for m in self.kept[mids.index(since) + 1:] if m.channel == channel][:limit]


def test_a_channel_opens_with_its_history_in_order() -> None:
    """Earlier messages fill the log when a channel opens, oldest first, none twice."""
    with (ServerThread(Settings(log_level="critical"), plugins=[Journal()]) as server,
          ChatClient(server.ws_url, "alice") as alice):
        alice.subscribe("lobby")
        for n in range(3):
            alice.publish("lobby", f"earlier {n}")
        chat = ChatWidget(server.ws_url, "bob", history=2)
        try:
            assert [m.text for m in chat.messages()] == ["earlier 1", "earlier 2"]
            log = chat.message_log.value
            assert log.index("earlier 1") < log.index("earlier 2")
            chat.send("now")
            assert chat.wait_for(lambda m: m.text == "now", WAIT).sender == "bob"
            assert chat.load_history("lobby") == 0  # nothing new: nothing doubled
            assert [m.text for m in chat.messages()] == ["earlier 1", "earlier 2", "now"]
            with pytest.raises(TimeoutError):
                chat.wait_for(lambda m: m.text == "never", 0.1)
        finally:
            chat.close()


def test_without_a_history_plugin_a_channel_opens_quietly(widget) -> None:
    """history_unavailable is not an error the reader needs to see."""
    alice = widget("alice")
    assert alice.channel == "lobby" and alice.messages() == []
    assert alice.error_line.value == ""


def test_the_member_list_follows_joins_and_leaves_by_presence(widget) -> None:
    """Without join/leave frames, the list is refreshed: a leave shows within the period."""
    alice = widget("alice", members_every=0.2)
    assert alice.members() == ["alice"]
    bob = widget("bob")
    wait_until(lambda: alice.members() == ["alice", "bob"], WAIT)
    bob.leave()
    wait_until(lambda: alice.members() == ["alice"], WAIT)
    assert "members · 1" in alice.member_list.value


def test_join_and_leave_frames_update_the_member_list_without_asking(widget) -> None:
    """The contract frames: a join adds a client, its last session's leave removes it."""
    alice = widget("alice", members_every=0)
    for frame in ({"type": "join", "channel": "lobby", "client_id": "bob", "session": "s1"},
                  {"type": "join", "channel": "lobby", "client_id": "bob", "session": "s2"},
                  {"type": "leave", "channel": "lobby", "client_id": "bob", "session": "s1"}):
        alice._on_presence(frame)
    assert alice.members() == ["alice", "bob"] and "bob" in alice.member_list.value
    alice._on_presence({"type": "leave", "channel": "lobby", "client_id": "bob",
                        "session": "s2"})
    assert alice.members() == ["alice"] and "bob" not in alice.member_list.value
    alice._on_presence({"type": "leave", "channel": "lobby", "client_id": "alice",
                        "session": alice.client.session_id})
    assert alice.members() == []


def test_after_a_server_restart_the_widget_says_what_was_recovered(redis_url: str) -> None:
    """Messages sent while the widget's server was down are replayed and counted."""
    journal = Journal()
    settings = Settings(log_level="critical", redis_url=redis_url)
    east = ServerThread(settings, plugins=[journal]).start()
    west = ServerThread(settings, plugins=[journal]).start()
    chat = ChatWidget(ChatClient(east.ws_url, "alice", reconnect_delay=0.05), history=0)
    try:
        with ChatClient(west.ws_url, "bob") as bob:
            bob.subscribe("lobby")
            bob.publish("lobby", "before")
            wait_until(lambda: len(chat.messages()) == 1, WAIT)
            east.stop()
            wait_until(lambda: "reconnecting" in chat.note_line.value, WAIT)
            for n in range(3):
                bob.publish("lobby", f"missed {n}")
            east = ServerThread(settings, plugins=[journal], port=east.port).start()
            wait_until(lambda: "recovered" in chat.note_line.value, WAIT)
        assert chat.note == "reconnected · recovered: true · 3 missed messages replayed"
        assert [m.text for m in chat.messages()] == ["before", "missed 0", "missed 1",
                                                      "missed 2"]
    finally:
        chat.close()
        east.stop()
        west.stop()


def test_to_html_is_a_static_picture_of_the_window(widget) -> None:
    alice = widget("alice")
    alice.send("hello <there>")
    wait_until(lambda: len(alice.messages()) == 1, WAIT)
    picture = alice.to_html()
    assert "hello &lt;there&gt;" in picture and "members · 1" in picture
    assert "<input" not in picture and "<script" not in picture
