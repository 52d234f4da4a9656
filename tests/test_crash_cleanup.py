"""Crash cleanup: a SIGKILLed process's clients leave presence within ``node_ttl``, and a
surviving process fires a best-effort ``client_disconnected`` for each of them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from quart_chat.config import Settings
from quart_chat.testing import ServerProcess, ServerThread, TcpProxy

from .helpers import settled, wait_until
from .wsclient import Client

pytestmark = pytest.mark.redis

ROOT = Path(__file__).parent.parent
NODE_TTL = 3.0


def environment(redis_url: str, events: Path) -> dict[str, str]:
    return {"QUART_CHAT_REDIS_URL": redis_url, "QUART_CHAT_NODE_TTL": str(NODE_TTL),
            "QUART_CHAT_PLUGINS": "tests.lost_sessions_plugin",
            "QUART_CHAT_TEST_EVENTS": str(events),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def keys(redis_server, pattern: str = "quart-chat:*") -> list[str]:
    return sorted(redis_server.cli("--scan", "--pattern", pattern).split())


def assert_no_records(redis_server, pattern: str = "quart-chat:*") -> None:
    """Every record is gone within a few seconds; else fail naming what is left."""
    assert settled(lambda: keys(redis_server, pattern), 5) == []


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_a_killed_process_s_clients_leave_presence_within_the_ttl(redis_server, redis_url,
                                                                   tmp_path):
    """SIGKILL one of two processes: the survivor removes its clients and tells plugins."""
    events = tmp_path / "events.jsonl"
    env = environment(redis_url, events)
    with ServerProcess(env) as doomed, ServerProcess(env) as survivor:
        victims = [Client(doomed.ws_url, f"victim{n}") for n in range(3)]
        for victim in victims:
            victim.ok("subscribe", channel="room")
            victim.ok("subscribe", channel=f"own-{victim.welcome['client_id']}")
        observer = Client(survivor.ws_url, "observer")
        observer.ok("subscribe", channel="room")
        everyone = ["observer", "victim0", "victim1", "victim2"]
        assert observer.ok("presence", channel="room")["clients"] == everyone
        sessions = {v.welcome["session"] for v in victims}
        doomed.stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: observer.ok("presence", channel="room")["clients"] == ["observer"],
                   NODE_TTL + 5, "dead clients gone from presence")
        gone_after = time.monotonic() - killed
        wait_until(lambda: len(read_events(events)) == 3, 5, "client_disconnected events")
        lost = read_events(events)
        print(f"\nSIGKILL: dead process's 3 clients left presence after {gone_after:.2f}s "
              f"(node_ttl {NODE_TTL}s); {len(lost)} client_disconnected fired on the survivor")
        assert {e["client_id"] for e in lost} == {"victim0", "victim1", "victim2"}
        assert {e["session"] for e in lost} == sessions
        assert all(e["close_code"] == 1006 and e["pid"] == survivor.pid for e in lost)
        assert all(e["channels"] == sorted(["room", f"own-{e['client_id']}"]) for e in lost)
        for n in range(3):
            assert observer.ok("presence", channel=f"own-victim{n}")["clients"] == []
        for victim in victims:
            victim.ws.close()
        left = keys(redis_server)
        assert not [k for k in left if "victim" in k or any(s in k for s in sessions)], left
        observer.close()
    assert_no_records(redis_server)


def test_leftovers_of_a_lone_dead_process_are_cleaned_by_the_next_one_to_start(
        redis_server, redis_url, tmp_path):
    """No survivor: the next process to start reaps the dead one's records."""
    events = tmp_path / "events.jsonl"
    env = environment(redis_url, events)
    with ServerProcess(env) as doomed:
        victim = Client(doomed.ws_url, "victim")
        victim.ok("subscribe", channel="room")
        doomed.stop(signal.SIGKILL)
        killed = time.monotonic()
        victim.ws.close()
    assert "quart-chat:presence:room" in keys(redis_server)
    with ServerProcess(env) as successor:
        observer = Client(successor.ws_url, "observer")
        try:  # closed on failure too: a leaked socket would fail a later test's warnings
            wait_until(lambda: observer.ok("presence", channel="room")["clients"] == [],
                       NODE_TTL + 5, "stale presence reaped")
            print(f"\nlone SIGKILL: records reaped {time.monotonic() - killed:.2f}s after the "
                  f"kill by the next process")
            # the hook runs once the records are gone
            wait_until(lambda: read_events(events), 5, "client_disconnected for the victim")
            assert [e["client_id"] for e in read_events(events)] == ["victim"]
        finally:
            observer.close()
    assert_no_records(redis_server)


def test_a_session_is_listed_under_its_node_before_its_first_frame_is_acted_on(
        redis_server):
    """Whatever a frame writes (presence, here) is findable by a reaper from the moment
    it is acknowledged: the session is listed and its node registered. Before, the first
    session of a process could have its subscribe answered while the node's registering
    beat was still in flight, and a SIGKILL then left presence no process reaped."""
    for n in range(8):  # the window was a round trip or two wide: try it often
        settings = Settings(key_prefix=f"listed{n}", node_ttl=30.0)
        with ServerThread(settings.replace(redis_url=redis_server.url)) as server, \
                contextlib.closing(Client(server.ws_url, "first")) as client:
            client.ok("subscribe", channel="room")
            node_id, session = server.service.node_id, client.welcome["session"]
            assert redis_server.cli("ZSCORE", f"listed{n}:nodes", node_id).strip()
            assert redis_server.cli("HGET", f"listed{n}:node:{node_id}", session).strip() \
                == "first"


def test_records_a_session_could_not_remove_are_swept_once_redis_is_back(redis_server):
    """A client leaves while Redis is cut off: its session cannot remove its records, so
    it stays in the node's list, and a heartbeat after Redis is back removes them."""
    settings = Settings(key_prefix="sweep", node_ttl=1.0, redis_probe_interval=0.2)
    with TcpProxy(redis_server.port) as proxy, \
            ServerThread(settings.replace(redis_url=proxy.url)) as server, \
            contextlib.closing(Client(server.ws_url, "stayer")) as stayer, \
            contextlib.closing(Client(server.ws_url, "leaver")) as leaver:
        stayer.ok("subscribe", channel="room")
        leaver.ok("subscribe", channel="room")
        session = next(s for s in server.service.sessions if s.client_id == "leaver")
        proxy.cut()
        leaver.close()
        wait_until(session.finished.is_set, 10, "leaver's session ended")
        assert session.records_left
        assert redis_server.cli("HGET", "sweep:presence:room", session.id).strip() == "leaver"
        proxy.restore()
        stayer_key = f"sweep:session:{stayer.welcome['session']}"
        node_key = f"sweep:node:{server.service.node_id}"
        wait_until(lambda: keys(redis_server, "sweep:*session:*") == [stayer_key]
                   and keys(redis_server, "sweep:client:*") == ["sweep:client:stayer"]
                   and session.id not in redis_server.cli("HKEYS", node_key).split(),
                   15, "the leaver's records swept and its listing removed")
        assert stayer.ok("presence", channel="room")["clients"] == ["stayer"]
    assert_no_records(redis_server, "sweep:*")


def test_a_session_opened_while_redis_was_cut_off_is_listed_once_it_is_back(redis_server):
    """The node's list of sessions is what a reaper cleans up after a crash: a session
    that opened while Redis was unreachable is added to it by a later heartbeat."""
    settings = Settings(key_prefix="relist", node_ttl=1.0, redis_probe_interval=0.2)
    with TcpProxy(redis_server.port) as proxy, \
            ServerThread(settings.replace(redis_url=proxy.url)) as server, \
            contextlib.closing(Client(server.ws_url, "early")) as early:
        early.ok("subscribe", channel="room")
        proxy.cut()
        with contextlib.closing(Client(server.ws_url, "late")) as late:
            node_key = f"relist:node:{server.service.node_id}"
            heartbeat = server.service.heartbeat
            wait_until(lambda: late.welcome["session"] in heartbeat._unlisted, 10,
                       "listing the late session failed")
            proxy.restore()
            wait_until(lambda: late.welcome["session"] in redis_server.cli("HKEYS", node_key),
                       15, "the late session listed")
            assert early.welcome["session"] in redis_server.cli("HKEYS", node_key)
