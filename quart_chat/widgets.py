"""A chat window for Jupyter: :class:`ChatWidget` (ipywidgets) over a :class:`ChatClient`.

::

    from ipywidgets import HBox
    from quart_chat.widgets import ChatWidget

    HBox([ChatWidget(url, "alice"), ChatWidget(url, "bob")])

Each widget shows its client's channels (join box, picker, leave), a scrolling log of
the current channel (time, sender, text; bot messages set apart), the members of the
channel, and a text box where Enter (or the Send button) publishes. Errors from the
server appear inline under the text box instead of as tracebacks.

A channel opens with its recent history (when a plugin keeps history). The member list
follows ``join``/``leave`` frames where the server sends them and otherwise asks for
``presence``: on opening a channel, when an unknown sender speaks, and every
``members_every`` seconds while nothing better is known. After a reconnect, a note says
whether the server replayed what was missed (``recovered``) and how much.
"""

from __future__ import annotations

import hashlib
import html
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .client import ChatClient, Disconnected, Reconnected
from .errors import ChatError
from .protocol import Message

__all__ = ["ChatWidget", "render_message", "sender_color"]

#: Messages kept per channel in the log.
LOG_LENGTH = 200
#: Earlier messages loaded when a channel opens.
HISTORY = 50
#: Seconds between presence refreshes while the server sends no join/leave frames.
MEMBERS_EVERY = 15.0

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#e377c2", "#17becf", "#bcbd22",
            "#ff7f0e", "#8c564b", "#3b6ea8")
_STATUS = {"connected": ("#2ca02c", "connected"), "reconnecting": ("#ff9f1c", "reconnecting…"),
           "closed": ("#9e9e9e", "closed")}
_FONT = "font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 13px;"


def sender_color(name: str) -> str:
    """A stable colour per sender name, so each person reads the same in every widget."""
    return _PALETTE[hashlib.sha1(name.encode()).digest()[0] % len(_PALETTE)]


def render_message(message: Message, me: str = "") -> str:
    """One log line as HTML: time, sender, text; bots get a badge and a tinted row."""
    clock = time.strftime("%H:%M:%S", time.localtime(message.ts))
    sender = html.escape(message.sender)
    text = html.escape(message.text).replace("\n", "<br>")
    row = "padding: 3px 8px; margin: 1px 0; border-radius: 6px; line-height: 1.35;"
    badge = ""
    if message.bot:
        row += " background: #f1ecfb; border-left: 3px solid #7e57c2;"
        badge = ('<span style="background:#7e57c2;color:white;border-radius:4px;'
                 'font-size:10px;padding:0 4px;margin-right:4px;">BOT</span>')
        text = f'<span style="color:#4a3a73;">{text}</span>'
    elif message.sender == me:
        row += " background: #eef5ff;"
    return (
        f'<div class="qc-msg{" qc-bot" if message.bot else ""}" style="{row}">'
        f'<span style="color:#999;font-size:11px;margin-right:6px;">{clock}</span>{badge}'
        f'<b style="color:{sender_color(message.sender)};">{sender}</b> '
        f"<span>{text}</span></div>"
    )


class ChatWidget(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """A chat window for one client; display it (two side by side in an ``HBox``).

    Parameters:
        client: a connected :class:`ChatClient`, or a server URL to connect to.
        client_id: who to connect as, when ``client`` is a URL.
        token_provider: when ``client`` is a URL of a server with a token key, a callable
            returning a fresh token (see :class:`ChatClient`): the widget stays connected
            across token expiries.
        channel: a channel to join at once (``None`` to start with none).
        history: earlier messages to load when a channel opens (0: none).
        members_every: seconds between presence refreshes of the member list, until the
            server sends join/leave frames (0: only on events).
        height: of the message log (CSS).
        width: of the whole widget (CSS).
    """

    def __init__(self, client: ChatClient | str, client_id: str | None = None, *,
                 token_provider: Callable[[], str] | None = None,
                 channel: str | None = "lobby", history: int = HISTORY,
                 members_every: float = MEMBERS_EVERY, height: str = "280px",
                 width: str = "440px") -> None:
        if isinstance(client, str):
            client = ChatClient(client, client_id, token_provider=token_provider)
        self.client = client
        self.me = client.client_id
        #: The channel shown in the log (None before the first join).
        self.channel: str | None = None
        self._logs: dict[str, deque[Message]] = {}
        # channel -> client id -> sessions seen in join frames (empty: known by presence)
        self._members: dict[str, dict[str, set[str]]] = {}
        self._lock = threading.RLock()  # the client's callback thread updates widgets too
        self._arrived = threading.Condition(self._lock)
        #: The last error shown under the text box, as plain text ("" when none).
        self.error = ""
        #: The connection note (lost, reconnected, recovered), as plain text.
        self.note = ""
        self._height = height
        self._picking = False
        self._history = history
        # channel -> messages received while disconnected (replayed by a recovery)
        self._missed: dict[str, int] | None = None
        self._live_members = False  # the server sends join/leave frames: no polling
        self._closed = threading.Event()

        self.header = w.HTML()
        fixed = "0 0 auto"  # buttons keep their width; the text boxes give way
        self.channel_picker = w.Dropdown(options=[], tooltip="channel shown",
                                         layout=w.Layout(width="104px", flex=fixed))
        self.join_box = w.Text(placeholder="join a channel…",
                               layout=w.Layout(width="136px", flex="0 1 auto"))
        self.join_button = w.Button(description="Join",
                                    layout=w.Layout(width="52px", flex=fixed),
                                    button_style="info")
        self.leave_button = w.Button(description="Leave", tooltip="leave the channel shown",
                                     layout=w.Layout(width="62px", flex=fixed))
        self.message_log = w.HTML(layout=w.Layout(flex="1 1 auto", width="auto"))
        self.member_list = w.HTML(layout=w.Layout(width="118px", flex=fixed))
        self.input = w.Text(placeholder="Type a message — Enter sends",
                            layout=w.Layout(flex="1 1 auto", width="auto"))
        self.send_button = w.Button(description="Send", button_style="primary",
                                    layout=w.Layout(width="64px", flex=fixed))
        self.error_line = w.HTML(layout=w.Layout(width="auto"))
        #: What happened to the connection (reconnected, recovered), under the log.
        self.note_line = w.HTML(layout=w.Layout(width="auto"))

        self.join_button.on_click(lambda _: self.join(self.join_box.value))
        self.join_box.on_msg(self._on_join_msg)
        self.leave_button.on_click(lambda _: self.leave())
        self.send_button.on_click(lambda _: self.send())
        self.input.on_msg(self._on_input_msg)
        self.channel_picker.observe(self._on_pick, "value")

        super().__init__(
            [
                self.header,
                w.HBox([self.channel_picker, self.join_box, self.join_button, self.leave_button],
                       layout=w.Layout(margin="2px 0", width="100%")),
                w.HBox([self.message_log, self.member_list], layout=w.Layout(width="100%")),
                w.HBox([self.input, self.send_button]),
                self.error_line,
                self.note_line,
            ],
            layout=w.Layout(width=width, border="1px solid #d0d7de", padding="8px",
                            margin="4px"),
        )
        client.on_message(self._on_message)
        client.on_reconnect(self._on_reconnect)
        client.on_disconnect(self._on_disconnect)
        client.on_presence(self._on_presence)
        for joined in client.subscriptions:
            self._logs.setdefault(joined, deque(maxlen=LOG_LENGTH))
        self._render_all()
        if channel is not None:
            self.join(channel)
        if members_every > 0:
            threading.Thread(target=self._poll_members, args=(members_every,), daemon=True,
                             name=f"quart-chat members {self.me}").start()

    # -- actions (what the buttons and Enter do; callable from code too) ----------------------

    def join(self, channel: str) -> bool:
        """Subscribe to ``channel`` and show it; False (and an inline error) on failure."""
        channel = channel.strip()
        if not channel:
            return False
        if channel not in self.client.subscriptions:
            with self._lock:  # before subscribing: a greeting may arrive before the reply
                self._logs.setdefault(channel, deque(maxlen=LOG_LENGTH))
            if not self._try(self.client.subscribe, channel):
                with self._lock:
                    self._logs.pop(channel, None)
                return False
            self.load_history(channel)
        self.join_box.value = ""
        self.show(channel)
        return True

    def leave(self, channel: str | None = None) -> bool:
        """Unsubscribe from ``channel`` (the shown one by default)."""
        channel = channel or self.channel
        if channel is None or not self._try(self.client.unsubscribe, channel):
            return False
        with self._lock:
            self._logs.pop(channel, None)
            remaining = sorted(self._logs)
        self.show(remaining[0] if remaining else None)
        return True

    def send(self, text: str | None = None) -> bool:
        """Publish ``text`` (the text box by default) to the shown channel."""
        from_box = text is None
        text = self.input.value if text is None else text
        if not text.strip():
            return False
        if self.channel is None:
            self._show_error("join a channel first")
            return False
        if not self._try(self.client.publish, self.channel, text):
            return False
        if from_box:
            self.input.value = ""
        return True

    def show(self, channel: str | None) -> None:
        """Show ``channel`` in the log (one already joined)."""
        with self._lock:
            self.channel = channel
        self.refresh_members()
        self._render_all()

    def load_history(self, channel: str) -> int:
        """Put up to ``history`` earlier messages of ``channel`` before its log; how many.

        Quietly nothing when no plugin keeps history (``history_unavailable``).
        """
        if self._history <= 0:
            return 0
        try:
            earlier = self.client.history(channel, limit=self._history)[::-1]
        except ChatError:
            return 0  # no history plugin, or the server is busy: the live log still works
        with self._lock:
            log = self._logs.get(channel)
            if log is None:
                return 0
            added = len({m.mid for m in earlier} - {m.mid for m in log})
            # History is newer than anything kept from before it began, older than what
            # arrived after it was read; the server's order stands within each part.
            # Where the log already holds fetched messages, its own order places the rest
            # (mids made in the same instant do not sort by time); elsewhere, by mid.
            fetched = {m.mid for m in earlier}
            kept = list(log)
            first = next((i for i, m in enumerate(kept) if m.mid in fetched), None)
            if first is None:
                start = earlier[0].mid if earlier else ""
                before = [m for m in kept if m.mid < start]
                after = [m for m in kept if m.mid >= start]
            else:
                before = [m for m in kept[:first] if m.mid not in fetched]
                after = [m for m in kept[first:] if m.mid not in fetched]
            log.clear()
            log.extend([*before, *earlier, *after])
        if channel == self.channel:
            self._render_log()
        return added

    def refresh_members(self) -> None:
        """Ask the server who is in the shown channel."""
        channel = self.channel
        if channel is None:
            return
        try:
            clients = self.client.presence(channel)
        except ChatError:
            return  # a member list is a nicety: keep the last one
        with self._lock:
            sessions = self._members.get(channel, {})
            self._members[channel] = {c: sessions.get(c, set()) for c in clients}
        if channel == self.channel:
            self._render_members()

    def members(self, channel: str | None = None) -> list[str]:
        """The members listed for ``channel`` (the shown one by default), sorted."""
        with self._lock:
            return sorted(self._members.get(channel or self.channel or "", ()))

    def wait_for(self, match: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        """The first message of the shown channel's log that ``match`` accepts, waiting up
        to ``timeout`` seconds for it to arrive (``TimeoutError`` otherwise)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = next((m for m in self._logs.get(self.channel or "", ()) if match(m)),
                             None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no such message in #{self.channel} within {timeout:g}s")
                self._arrived.wait(left)

    def messages(self, channel: str | None = None) -> list[Message]:
        """The messages in the log of ``channel`` (the shown one by default), oldest first."""
        with self._lock:
            return list(self._logs.get(channel or self.channel or "", ()))

    def close(self) -> None:
        """Close the widget and its client."""
        self._closed.set()
        self.client.close()
        super().close()

    def to_html(self) -> str:
        """A static picture of the window (header, log, members, notes) as one HTML block,
        for pages and screenshots where no widget manager runs."""
        box = "border:1px solid #d0d7de;border-radius:4px;padding:4px 8px;color:#666;"
        controls = (
            f'<div style="{_FONT} display:flex;gap:6px;margin:4px 0;">'
            f'<span style="{box}min-width:88px;">{html.escape(self.channel or "")} ▾</span>'
            f'<span style="{box}flex:1;">join a channel…</span></div>'
        )
        entry = (f'<div style="{_FONT} display:flex;gap:6px;margin-top:4px;">'
                 f'<span style="{box}flex:1;">{html.escape(self.input.placeholder)}</span>'
                 '<span style="background:#2196f3;color:white;border-radius:4px;'
                 'padding:4px 12px;">Send</span></div>')
        return (
            f'<div style="width:{self.layout.width};border:1px solid #d0d7de;padding:8px;'
            f'margin:4px;box-sizing:border-box;background:white;">{self.header.value}'
            f'{controls}<div style="display:flex;"><div style="flex:1;">'
            f"{self.message_log.value}</div>{self.member_list.value}</div>{entry}"
            f"{self.error_line.value}{self.note_line.value}</div>"
        )

    # -- events ------------------------------------------------------------------------------

    def _on_input_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("event") == "submit":  # Enter in the text box
            self.send()

    def _on_join_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("event") == "submit":
            self.join(self.join_box.value)

    def _on_pick(self, change: dict[str, Any]) -> None:
        if self._picking:
            return
        if change["new"] and change["new"] != self.channel:
            self.show(change["new"])

    def _on_message(self, message: Message) -> None:
        with self._lock:
            log = self._logs.get(message.channel)
            if log is None:
                return
            log.append(message)
            self._arrived.notify_all()
            if self._missed is not None:  # between a drop and the reconnect: a replay
                self._missed[message.channel] = self._missed.get(message.channel, 0) + 1
            known = self._members.get(message.channel, {})
            stranger = not message.bot and message.sender not in known
        if message.channel == self.channel:
            self._render_log()
            if stranger and not self._live_members:
                self.refresh_members()

    def _on_presence(self, frame: dict[str, Any]) -> None:
        """A ``join``/``leave`` frame: the member list changes without asking the server.

        A client may have several sessions; it leaves the list with the last one known.
        """
        channel, who, session = frame.get("channel"), frame.get("client_id"), frame.get("session")
        if not isinstance(channel, str) or not isinstance(who, str):
            return
        self._live_members = True
        with self._lock:
            members = self._members.setdefault(channel, {})
            if frame.get("type") == "join":
                members.setdefault(who, set()).add(str(session))
            elif who in members:
                sessions = members[who]
                sessions.discard(str(session))
                if not sessions:
                    del members[who]
        if channel == self.channel:
            self._render_members()

    def _poll_members(self, every: float) -> None:
        """Refresh the member list now and then (leaves are otherwise never seen)."""
        while not self._closed.wait(every):
            if self.client.state == "closed":
                return
            if not self._live_members and self.client.connected:
                self.refresh_members()

    def _on_reconnect(self, event: Reconnected) -> None:
        with self._lock:
            for channel in event.lost:
                self._logs.pop(channel, None)
            missed, self._missed = self._missed or {}, None
        if event.lost:
            lost = ", ".join(f"{c} ({e.code})" for c, e in event.lost.items())
            self._show_error(f"reconnected, but could not rejoin {lost}")
        else:
            self._show_error("")
        reloaded = {channel: self.load_history(channel)  # no replay: fill the gap from history
                    for channel, complete in event.recovered.items() if not complete}
        self._show_note(self._reconnect_note(event, missed, reloaded))
        if self.channel in event.lost:
            self.show(next(iter(sorted(self._logs)), None))
        else:
            self._render_header()
            self.refresh_members()

    def _reconnect_note(self, event: Reconnected, missed: dict[str, int],
                        reloaded: dict[str, int]) -> str:
        channel = self.channel
        if channel is None or channel not in event.recovered:
            return "reconnected"
        count = missed.get(channel, 0)
        if event.recovered[channel]:
            return (f"reconnected · recovered: true · {count} missed "
                    f"message{'s' if count != 1 else ''} replayed")
        if reloaded.get(channel):
            return f"reconnected · recovered: false · {reloaded[channel]} from history"
        return "reconnected · recovered: false · messages sent meanwhile are missing"

    def _on_disconnect(self, event: Disconnected) -> None:
        with self._lock:
            if event.reconnecting and self._missed is None:
                self._missed = {}
        self._render_header()
        if event.reconnecting:
            self._show_note("connection lost · reconnecting…")
        else:
            self._show_error(f"disconnected: {event.reason or event.code}")

    def _try(self, action: Any, *args: Any) -> bool:
        try:
            action(*args)
        except ChatError as exc:
            self._show_error(f"{exc.code}: {exc}")
            return False
        self._show_error("")
        return True

    # -- rendering ---------------------------------------------------------------------------

    def _show_error(self, text: str) -> None:
        self.error = text
        self.error_line.value = (
            f'<div style="{_FONT} color:#b3261e;background:#fdecea;border-radius:4px;'
            f'padding:3px 8px;margin-top:4px;white-space:normal;overflow-wrap:anywhere;'
            f'line-height:1.35;">⚠ {html.escape(text)}</div>' if text else ""
        )

    def _show_note(self, text: str) -> None:
        self.note = text
        self.note_line.value = (
            f'<div style="{_FONT} color:#5a4a00;background:#fff8e1;border-radius:4px;'
            f'padding:3px 8px;margin-top:4px;line-height:1.35;">↻ {html.escape(text)}</div>'
            if text else ""
        )

    def _render_all(self) -> None:
        with self._lock:
            options = sorted(self._logs)
        self._picking = True  # setting options fires the picker's observer
        try:
            self.channel_picker.options = options
            self.channel_picker.value = self.channel if self.channel in options else None
        finally:
            self._picking = False
        self.input.placeholder = (f"Message #{self.channel} — Enter sends" if self.channel
                                  else "Join a channel to chat")
        self._render_header()
        self._render_log()
        self._render_members()

    def _render_header(self) -> None:
        color, status = _STATUS.get(self.client.state, _STATUS["closed"])
        initial = html.escape(self.me[:1].upper() or "?")
        where = f" in <b>#{html.escape(self.channel)}</b>" if self.channel else ""
        self.header.value = (
            f'<div style="{_FONT} display:flex;align-items:center;gap:8px;">'
            f'<span style="background:{sender_color(self.me)};color:white;border-radius:50%;'
            f'width:26px;height:26px;display:inline-flex;align-items:center;'
            f'justify-content:center;font-weight:bold;">{initial}</span>'
            f'<span style="font-size:15px;"><b>{html.escape(self.me)}</b>{where}</span>'
            f'<span style="margin-left:auto;color:{color};font-size:12px;">● {status}</span>'
            "</div>"
        )

    def _render_log(self) -> None:
        with self._lock:
            messages = list(self._logs.get(self.channel or "", ()))
        if messages:
            body = "".join(render_message(m, self.me) for m in messages)
        else:
            hint = "no messages yet" if self.channel else "join a channel to start"
            body = f'<div style="color:#999;padding:8px;">{hint}</div>'
        # column-reverse keeps the view scrolled to the newest message.
        self.message_log.value = (
            f'<div style="{_FONT} height:{self._height};overflow-y:auto;display:flex;'
            f'flex-direction:column-reverse;border:1px solid #eaeef2;border-radius:6px;'
            f'background:#fff;"><div>{body}</div></div>'
        )

    def _render_members(self) -> None:
        members = self.members()
        rows = "".join(
            f'<div style="white-space:nowrap;overflow:hidden;text-overflow:ellipsis;">'
            f'<span style="color:{sender_color(m)};">●</span> '
            f'{"<b>" + html.escape(m) + "</b>" if m == self.me else html.escape(m)}</div>'
            for m in members
        )
        self.member_list.value = (
            f'<div style="{_FONT} height:{self._height};overflow-y:auto;padding:4px 8px;'
            f'background:#f6f8fa;border-radius:6px;margin-left:6px;">'
            f'<div style="color:#666;font-size:11px;text-transform:uppercase;'
            f'margin-bottom:4px;">members · {len(members)}</div>{rows}</div>'
        )
