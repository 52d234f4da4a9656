"""history: the first plugin with an answer serves the history frame."""

from __future__ import annotations

from quart_chat import Message, hookimpl

from .kit import refusal


def _messages(channel, count):
    return [Message(channel=channel, sender="archive", text=f"old {n}", ts=1000.0 + n,
                    mid=f"{1000000 + n:012x}0000000000") for n in reversed(range(count))]


class Archive:
    """Keeps history for ``archive:*`` channels only."""

    def __init__(self) -> None:
        self.asked = []

    @hookimpl
    async def history(self, channel, limit, before):
        self.asked.append((channel, limit, before))
        if not channel.startswith("archive:"):
            return None
        kept = _messages(channel, 10)
        if before is not None:
            kept = [m for m in kept if m.mid < before]
        return kept[:limit]


def test_hook_history_first_non_none_result_is_served(serve):
    """The client gets the plugin's messages, newest first, with every field."""
    plugin = Archive()
    server = serve(plugin)
    alice = server.connect("alice")
    messages = alice.history("archive:1", limit=3)
    assert [m.text for m in messages] == ["old 9", "old 8", "old 7"]
    assert messages[0] == _messages("archive:1", 10)[0]  # every field, as the plugin kept it
    older = alice.history("archive:1", limit=50, before=messages[-1].mid)
    assert [m.text for m in older] == [f"old {n}" for n in range(6, -1, -1)]
    assert plugin.asked == [("archive:1", 3, None), ("archive:1", 50, messages[-1].mid)]


def test_hook_history_none_from_every_plugin_is_history_unavailable(serve):
    """No plugin keeps the channel: error history_unavailable."""
    server = serve(Archive())
    assert refusal(server.connect("alice").history, "lobby").code == (
        "history_unavailable")


def test_hook_history_without_plugins_is_history_unavailable(serve):
    """The server alone keeps no history."""
    server = serve()
    assert refusal(server.connect("alice").history, "lobby").code == (
        "history_unavailable")


def test_hook_history_later_plugins_are_not_asked_once_one_answers(serve):
    """First non-None wins: plugins after the one that answered are not called."""

    class Empty:
        @hookimpl
        def history(self):
            return []

    archive = Archive()
    server = serve(archive, Empty())  # Empty is called first
    assert server.connect("alice").history("archive:1") == []
    assert archive.asked == []


def test_hook_history_is_authorized_like_a_subscription(serve):
    """A client that may not subscribe to a channel may not read its history either."""

    class Private:
        @hookimpl
        def authorize(self, channel):
            return channel != "archive:secret"

    server = serve(Archive(), Private())
    alice = server.connect("alice")
    assert refusal(alice.history, "archive:secret").code == "forbidden"
    alice.history("archive:open")


def test_hook_history_that_raises_is_internal(serve, caplog):
    """A crashing history plugin answers internal and is logged by name."""

    class Crashing:
        @hookimpl
        def history(self):
            raise RuntimeError("index corrupt")

    server = serve(Crashing())
    alice = server.connect("alice")
    assert refusal(alice.history, "lobby").code == "internal"
    assert "plugin Crashing: hook history raised" in caplog.text
    alice.ping()
