"""Connection logs: one line per connect and disconnect, text or JSON, never secrets."""

from __future__ import annotations

import json
import logging
import time

import jwt
import pytest

from quart_chat import logs
from quart_chat.config import Settings
from quart_chat.errors import ConfigError
from quart_chat.testing import ServerProcess, ServerThread

from .wsclient import Client

SECRET = "log-test-secret-0123456789abcdef0123"
BODY = "the body of a private message 8f3a"


def access_records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "quart_chat.access" and getattr(r, "event", None) == event]


def wait_for(caplog: pytest.LogCaptureFixture, event: str, tries: int = 200) -> logging.LogRecord:
    """The first access record for ``event``, waiting (bounded) for the server thread."""
    for _ in range(tries):
        records = access_records(caplog, event)
        if records:
            return records[0]
        time.sleep(0.05)
    raise AssertionError(f"no {event} line was logged")


def test_one_line_per_connect_and_disconnect(server, caplog):
    """Connect and disconnect each log one line with client, session, duration, close code."""
    caplog.set_level(logging.INFO, logger="quart_chat")
    client = Client(server.ws_url, "alice")
    session = client.welcome["session"]
    # A store round trip first: a close that races the session's store.connect can leave
    # the session open with Redis (see the report on cancellation inside redis-py).
    client.ok("subscribe", channel="log-room")
    connect = wait_for(caplog, "connect")
    assert (connect.client_id, connect.session) == ("alice", session)  # type: ignore[attr-defined]
    client.close()
    disconnect = wait_for(caplog, "disconnect")
    assert disconnect.client_id == "alice"  # type: ignore[attr-defined]
    assert disconnect.session == session  # type: ignore[attr-defined]
    assert disconnect.close_code == 1000  # type: ignore[attr-defined]
    assert disconnect.duration >= 0  # type: ignore[attr-defined]
    assert len(access_records(caplog, "connect")) == len(access_records(caplog, "disconnect")) == 1

    text = logs.formatter("text").format(disconnect)
    assert f"disconnect client_id=alice session={session} duration=" in text
    assert "close_code=1000" in text
    line = json.loads(logs.formatter("json").format(disconnect))
    assert line["event"] == "disconnect"
    assert (line["client_id"], line["session"], line["close_code"]) == ("alice", session, 1000)
    assert isinstance(line["duration"], float)
    assert line["level"] == "info" and line["logger"] == "quart_chat.access"


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_server_close_code_is_logged(settings, caplog):
    """A session the server ends (shutdown) logs its close code 1001."""
    caplog.set_level(logging.INFO, logger="quart_chat")
    with ServerThread(settings) as server:
        client = Client(server.ws_url, "bob")
    disconnect = wait_for(caplog, "disconnect")
    assert disconnect.close_code == 1001  # type: ignore[attr-defined]
    client.close()


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
def test_logs_never_contain_tokens_or_message_bodies(settings, caplog):
    """Even at debug level, no log line holds a client's token or a message text."""
    caplog.set_level(logging.DEBUG)
    token = jwt.encode({"sub": "carol"}, SECRET, algorithm="HS256")
    with ServerThread(settings.replace(jwt_secret=SECRET)) as server:
        client = Client(server.ws_url, None, token=token)
        client.ok("subscribe", channel="secret-room")
        client.ok("publish", channel="secret-room", text=BODY)
        client.next("message")
        client.close()
        wait_for(caplog, "disconnect")
    assert access_records(caplog, "connect")[0].client_id == "carol"  # type: ignore[attr-defined]
    for fmt in logs.FORMATS:
        formatter = logs.formatter(fmt)
        for record in caplog.records:
            line = formatter.format(record)
            assert token not in line and SECRET not in line and BODY not in line


def test_serve_writes_json_lines(tmp_path):
    """``QUART_CHAT_LOG_FORMAT=json``: the server's log is JSON lines with the access events."""
    token = jwt.encode({"sub": "dave"}, SECRET, algorithm="HS256")
    env = {"QUART_CHAT_LOG_FORMAT": "json", "QUART_CHAT_JWT_SECRET": SECRET}
    server = ServerProcess(env)
    with server:
        client = Client(server.ws_url, None, token=token)
        client.ok("subscribe", channel="json-room")
        client.ok("publish", channel="json-room", text=BODY)
        client.close()
        for _ in range(200):  # bounded wait for the disconnect line
            if '"event": "disconnect"' in server.log():
                break
            time.sleep(0.05)
        output = server.log()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = {line.get("event"): line for line in lines}
    assert events["connect"]["client_id"] == "dave"
    assert events["disconnect"]["close_code"] == 1000
    assert {"ts", "level", "logger", "message"} <= set(events["disconnect"])
    assert token not in output and BODY not in output


def test_log_format_is_checked():
    """An unknown log format is refused with the setting's name."""
    with pytest.raises(ConfigError, match="QUART_CHAT_LOG_FORMAT"):
        Settings(log_format="xml").replace()
    assert Settings().log_format == "text"
