"""Shared fixtures: a private redis-server for the run, servers parametrized by broker."""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterator

import pytest

from quart_chat.config import Settings
from quart_chat.testing import LocalCluster, RedisServer, ServerThread

from .wsclient import OPEN, Client

BROKERS = ["memory", "redis", "cluster"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server on a free loopback port for the whole run."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private Redis, restarted if a test stopped it, with an empty database."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.resume()
    redis_server.cli("FLUSHALL")
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """One real 3-primary Redis Cluster on free loopback ports for the whole run."""
    with LocalCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def keep_gc_thresholds() -> Iterator[None]:
    """An app started in this process (Quart's test client) tunes the garbage collector
    as a server would; the test process keeps the interpreter's thresholds."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


@pytest.fixture(autouse=True)
def close_forgotten_clients() -> Iterator[None]:
    """Close the WebSocket clients a test left open (it failed halfway, say): otherwise
    their sockets are collected, and fail as ResourceWarnings, in some later test."""
    yield
    while OPEN:
        OPEN.pop().close()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """The private cluster with every primary emptied (``redis+cluster://`` URL)."""
    for node in redis_cluster.alive():
        if node.cli("ROLE").startswith("master"):
            node.cli("FLUSHALL")
    return redis_cluster.url


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    """Run the test with the embedded broker, one real Redis and a Redis Cluster."""
    return str(request.param)


@pytest.fixture
def settings(broker: str, request: pytest.FixtureRequest) -> Settings:
    base = Settings(redis_probe_interval=0.2)
    if broker == "redis":
        return base.replace(redis_url=request.getfixturevalue("redis_url"))
    if broker == "cluster":
        return base.replace(redis_url=request.getfixturevalue("cluster_url"))
    return base


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    """A live hypercorn server on loopback (in a thread), stopped after the test."""
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def opened() -> Iterator[object]:
    """``opened(server, "alice")`` opens a real WebSocket client, closed after the test."""
    clients: list[Client] = []

    def open_client(server: ServerThread, client_id: str, **params: str) -> Client:
        client = Client(server.ws_url, client_id, **params)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def connect(server: ServerThread, opened: object) -> object:
    """``connect("alice")``: a client of the ``server`` fixture."""
    return functools.partial(opened, server)


@pytest.fixture
def make_server(settings: Settings) -> Iterator[object]:
    """``make_server(outbound_queue=8, plugins=[...])``: a server with changed settings."""
    running: list[ServerThread] = []

    def start(plugins: tuple[object, ...] = (), **overrides: object) -> ServerThread:
        server = ServerThread(settings.replace(**overrides), plugins=plugins).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()
