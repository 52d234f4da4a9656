"""The app through Quart's test client (no sockets): handshake and one round trip."""

from __future__ import annotations

import gc
import json

import pytest
from quart.testing import WebsocketResponseError

from quart_chat import Settings, create_app
from quart_chat.app import GC_THRESHOLDS
from quart_chat.testing import ServerThread

from .helpers import health


@pytest.fixture
async def test_app():
    app = create_app(Settings())
    async with app.test_app() as running:
        yield running


async def test_welcome_and_ping_through_the_test_client(test_app):
    client = test_app.test_client()
    async with client.websocket("/ws?client_id=alice") as ws:
        welcome = json.loads(await ws.receive())
        assert (welcome["type"], welcome["client_id"]) == ("welcome", "alice")
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        reply = json.loads(await ws.receive())
        assert (reply["type"], reply["id"], reply["ok"]) == ("result", 1, True)


async def test_refused_handshake_is_an_http_error_with_a_reason(test_app):
    client = test_app.test_client()
    with pytest.raises(WebsocketResponseError) as info:
        async with client.websocket("/ws?client_id=not%20valid") as ws:
            await ws.receive()
    assert info.value.response.status_code == 400
    assert "client_id" in (await info.value.response.get_json())["error"]


async def test_origin_not_on_the_allowlist_is_refused_with_403():
    app = create_app(Settings(allowed_origins=("https://chat.example",)))
    async with app.test_app() as running:
        client = running.test_client()
        with pytest.raises(WebsocketResponseError) as info:
            async with client.websocket(
                "/ws?client_id=a", headers={"Origin": "https://chat.example.evil"}
            ) as ws:
                await ws.receive()
        assert info.value.response.status_code == 403
        async with client.websocket(
            "/ws?client_id=a", headers={"Origin": "https://chat.example"}
        ) as ws:
            assert json.loads(await ws.receive())["type"] == "welcome"


async def test_healthz_with_the_embedded_broker(test_app):
    response = await test_app.test_client().get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json())["broker"] == "memory"


@pytest.mark.parametrize("tune", [True, False])
async def test_a_serving_app_tunes_the_garbage_collector_unless_told_not_to(tune):
    """``tune_gc`` (on by default) raises the collector's thresholds when the app starts
    serving; off, the interpreter's stay (the keep_gc_thresholds fixture restores them)."""
    gc.set_threshold(700, 10, 10)
    app = create_app(Settings(tune_gc=tune))
    async with app.test_app():
        assert gc.get_threshold() == (GC_THRESHOLDS if tune else (700, 10, 10))
    assert Settings().tune_gc


def test_a_server_in_a_thread_leaves_its_host_process_collector_alone():
    gc.set_threshold(700, 10, 10)
    with ServerThread(Settings(tune_gc=True)) as server:
        assert health(server.url)["status"] == "ok"
        assert gc.get_threshold() == (700, 10, 10)
