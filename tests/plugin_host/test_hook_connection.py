"""authenticate, client_connected/disconnected, authorize, client_subscribed/unsubscribed."""

from __future__ import annotations

import pytest

from quart_chat import Forbidden, hookimpl
from quart_chat.client import ConnectFailed

from .kit import WAIT, Recorder, refusal, wait_logged


class Connections:
    def __init__(self) -> None:
        self.seen = Recorder()

    @hookimpl
    def client_connected(self, session):
        self.seen.add("connected", (session.client_id, session.id))

    @hookimpl
    async def client_disconnected(self, session):
        self.seen.add("disconnected", (session.client_id, session.close_code,
                                       sorted(session.channels)))

    @hookimpl
    def client_subscribed(self, session, channel):
        self.seen.add("subscribed", (session.client_id, channel))

    @hookimpl
    def client_unsubscribed(self, session, channel):
        self.seen.add("unsubscribed", (session.client_id, channel))


class HeaderAuth:
    """Identity from a query parameter a gateway would set: ``?user=<name>``."""

    @hookimpl
    def authenticate(self, request):
        user = request.args.get("user")
        if user == "mallory":
            raise Forbidden("mallory is banned")
        return f"user.{user}" if user else None


# -- authenticate ------------------------------------------------------------------------


def test_hook_authenticate_first_non_none_result_is_the_client_id(serve):
    """A plugin's identity replaces the built-in client_id handling."""
    server = serve(HeaderAuth())
    client = server.connect(None, user="zoe")
    assert client.welcome["client_id"] == "user.zoe"


def test_hook_authenticate_none_defers_to_the_builtin_client_id(serve):
    """A plugin returning None leaves the plain ?client_id= handshake working."""
    server = serve(HeaderAuth())
    assert server.connect("alice").welcome["client_id"] == "alice"


def test_hook_authenticate_first_plugin_wins_in_call_order(serve):
    """With two authenticators the one pluggy calls first (registered last) decides."""

    class Other:
        @hookimpl
        async def authenticate(self):
            return "other"

    server = serve(HeaderAuth(), Other())
    assert server.connect(None, user="zoe").welcome["client_id"] == "other"


def test_hook_authenticate_forbidden_refuses_the_handshake_with_403(serve):
    """Raising Forbidden refuses the socket before it is accepted."""
    server = serve(HeaderAuth())
    with pytest.raises(ConnectFailed) as refused:
        server.connect(None, user="mallory")
    assert refused.value.status == 403


def test_hook_authenticate_that_raises_refuses_with_500_and_is_logged(serve, caplog):
    """A crashing authenticator refuses that handshake only; others still connect."""

    class Crashing:
        @hookimpl
        def authenticate(self, request):
            if request.args.get("client_id") == "boom":
                raise KeyError("boom")

    server = serve(Crashing())
    with pytest.raises(ConnectFailed) as refused:
        server.connect("boom")
    assert refused.value.status == 500
    assert "plugin Crashing: hook authenticate raised" in caplog.text
    assert server.connect("alice").welcome["client_id"] == "alice"


def test_hook_authenticate_invalid_client_id_is_refused_with_400(serve):
    """An authenticator returning an id outside the allowed alphabet is refused."""

    class Bad:
        @hookimpl
        def authenticate(self):
            return "no spaces allowed"

    server = serve(Bad())
    with pytest.raises(ConnectFailed) as refused:
        server.connect("alice")
    assert refused.value.status == 400


# -- client_connected / client_disconnected ------------------------------------------------


def test_hook_client_connected_sees_the_accepted_session(serve):
    """client_connected gets the session with its client id and session id."""
    plugin = Connections()
    server = serve(plugin)
    alice = server.connect("alice")
    assert plugin.seen.wait("connected") == [("alice", alice.welcome["session"])]


def test_hook_client_disconnected_runs_after_leaving_every_channel(serve):
    """client_disconnected runs once, after the session left its channels; it still
    names the channels it was in (a goodbye bot needs them)."""
    plugin = Connections()
    server = serve(plugin)
    alice = server.connect("alice")
    alice.subscribe("a")
    alice.subscribe("b")
    alice.close()
    (client_id, close_code, channels), = plugin.seen.wait("disconnected")
    assert (client_id, channels) == ("alice", ["a", "b"])
    assert close_code is not None
    assert plugin.seen.of("unsubscribed") == []  # disconnecting is not unsubscribing


def test_hook_client_connected_that_raises_leaves_the_session_working(serve, caplog):
    """A failing greeting hook is logged; the client still chats."""

    class Crashing:
        @hookimpl
        def client_connected(self):
            raise RuntimeError("audit log is down")

    server = serve(Crashing())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    alice.publish("lobby", "still here")
    assert alice.receive(WAIT).text == "still here"
    wait_logged(caplog, "plugin Crashing: hook client_connected raised")


# -- authorize -------------------------------------------------------------------------------


class StaffOnly:
    """Only ``staff-*`` clients may enter ``staff``; ``news`` is read-only but for ``editor``."""

    def __init__(self) -> None:
        self.seen = Recorder()

    @hookimpl
    def authorize(self, session, action, channel):
        self.seen.add("authorize", (session.client_id, action, channel))
        if channel == "staff" and not session.client_id.startswith("staff-"):
            return False
        if channel == "news" and action == "publish":
            return session.client_id == "editor"
        return None


def test_hook_authorize_false_refuses_subscribe_with_forbidden(serve):
    """A refused subscription is error forbidden; allowed ones go through."""
    plugin = StaffOnly()
    server = serve(plugin)
    alice, staff = server.connect("alice"), server.connect("staff-bob")
    assert refusal(alice.subscribe, "staff").code == "forbidden"
    staff.subscribe("staff")
    assert alice.channels() == []
    assert ("alice", "subscribe", "staff") in plugin.seen.of("authorize")


def test_hook_authorize_false_refuses_presence_asked_as_subscribe(serve):
    """Presence follows the decision for subscribing: the hook is asked with "subscribe",
    and a refused client gets forbidden instead of the member list."""
    plugin = StaffOnly()
    server = serve(plugin)
    alice, staff = server.connect("alice"), server.connect("staff-bob")
    staff.subscribe("staff")
    assert staff.presence("staff") == ["staff-bob"]
    assert refusal(alice.presence, "staff").code == "forbidden"
    assert ("alice", "subscribe", "staff") in plugin.seen.of("authorize")
    assert {action for _, action, _ in plugin.seen.of("authorize")} == {"subscribe"}


def test_hook_authorize_false_refuses_publish_and_nothing_is_delivered(serve):
    """A refused publish is error forbidden and reaches nobody."""
    server = serve(StaffOnly())
    alice, editor = server.connect("alice"), server.connect("editor")
    for client in (alice, editor):
        client.subscribe("news")
    assert refusal(alice.publish, "news", "fake news").code == "forbidden"
    editor.publish("news", "real news")
    assert alice.receive(WAIT).text == "real news"
    assert editor.receive(WAIT).text == "real news"


class Asked:
    """An authorizer that records whether it was asked and answers ``answer``."""

    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    def answer_for(self, action, channel):
        self.asked.append((action, channel))
        return self.answer


class AskedFirst(Asked):
    @hookimpl(tryfirst=True)
    def authorize(self, action, channel):
        return self.answer_for(action, channel)


class AskedLast(Asked):
    @hookimpl(trylast=True)
    def authorize(self, action, channel):
        return self.answer_for(action, channel)


def test_hook_authorize_true_does_not_stop_a_later_refusal(serve):
    """An earlier True is not the last word: the next implementation is asked, its False wins."""
    allow, refuse = AskedFirst(True), AskedLast(False)
    server = serve(refuse, allow)
    assert refusal(server.connect("alice").subscribe, "staff").code == "forbidden"
    assert allow.asked == refuse.asked == [("subscribe", "staff")]


def test_hook_authorize_first_false_wins_and_the_rest_are_not_asked(serve):
    """The first False refuses; implementations after it in call order are not asked."""
    refuse, after = AskedFirst(False), AskedLast(True)
    server = serve(after, refuse)
    alice = server.connect("alice")
    assert refusal(alice.subscribe, "staff").code == "forbidden"
    assert refuse.asked == [("subscribe", "staff")]
    assert after.asked == []


def test_hook_authorize_that_raises_is_internal_for_that_request_only(serve):
    """A crashing authorizer answers internal; the session keeps working."""

    class Crashing:
        @hookimpl
        def authorize(self, channel):
            if channel == "cursed":
                raise ZeroDivisionError

    server = serve(Crashing())
    alice = server.connect("alice")
    assert refusal(alice.subscribe, "cursed").code == "internal"
    alice.subscribe("fine")


# -- client_subscribed / client_unsubscribed -----------------------------------------------


def test_hook_client_subscribed_runs_after_each_subscription_with_a_bot(serve):
    """client_subscribed gets the session and channel; its bot can greet the channel."""

    class Greeter:
        BOT_NAME = "doorman"

        @hookimpl
        async def client_subscribed(self, session, channel, bot):
            await bot.publish(channel, f"hello {session.client_id}")

    plugin = Connections()
    server = serve(plugin, Greeter())
    alice = server.connect("alice")
    alice.subscribe("lobby")
    greeting = alice.receive(WAIT)
    assert (greeting.sender, greeting.text, greeting.bot) == (
        "doorman", "hello alice", True)
    assert plugin.seen.wait("subscribed") == [("alice", "lobby")]


def test_hook_client_subscribed_is_not_called_for_a_refused_subscription(serve):
    """Only subscriptions that happened are reported."""
    plugin = Connections()
    server = serve(plugin, StaffOnly())
    alice = server.connect("alice")
    refusal(alice.subscribe, "staff")
    alice.subscribe("lobby")
    assert plugin.seen.wait("subscribed") == [("alice", "lobby")]


def test_hook_client_unsubscribed_runs_for_each_channel_left(serve):
    """Leaving one channel, then all, reports every channel once."""
    plugin = Connections()
    server = serve(plugin)
    alice = server.connect("alice")
    for channel in ("a", "b", "c"):
        alice.subscribe(channel)
    alice.unsubscribe("b")
    assert alice.unsubscribe() == []
    assert sorted(plugin.seen.wait("unsubscribed", 3)) == [
        ("alice", "a"), ("alice", "b"), ("alice", "c")]
