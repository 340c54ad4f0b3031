"""A node's background work under its supervisor: restarted, visible in /health and /metrics, and a stop that always
closes storage. The supervisor's clock is injected, so the health window passes by moving a number."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rumor.server import serve as serve_module
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.errors import StorageError
from rumor.server.http_api import create_app
from rumor.server.node import Node
from rumor.server.replication.runtime import GossipReplication
from rumor.server.replication.seam import Standalone
from rumor.server.storage import DB_FILE
from rumor.server.supervisor import Supervisor, SupervisorConfig
from rumor.server.updates import Increment
from rumor.server.version import VERSION

pytestmark = pytest.mark.integration  # aiohttp's TestServer and `serve` bind real sockets on loopback


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


async def test_a_failed_checkpointer_is_restarted_and_health_says_why_until_the_window_passed(
    disk_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    supervisor = Supervisor(SupervisorConfig(healthy_after_s=30.0), clock=clock, sleep=no_wait)
    config = with_overrides(disk_config, checkpoint_interval_s=0.001)
    async with Node(config, supervisor=supervisor) as node, TestClient(TestServer(create_app(node))) as api:
        rounds = 0
        restarted = asyncio.Event()
        real_round = node.checkpointer.round_in_slices

        async def flaky_round() -> int:
            nonlocal rounds
            rounds += 1
            if rounds == 1:
                raise RuntimeError("disk on fire")
            restarted.set()
            return await real_round()

        node.checkpointer.round_in_slices = flaky_round  # type: ignore[method-assign]
        async with asyncio.timeout(5):
            await restarted.wait()
        response = await api.get("/health")
        assert response.status == 503
        body = await response.json()
        assert body["status"] == "unavailable" and body["ready"] is False
        assert body["failing"] == {"checkpointer": "RuntimeError: disk on fire"}
        metrics = await (await api.get("/metrics")).text()
        assert 'rumor_background_failures_total{component="checkpointer"} 1' in metrics
        failures = [r for r in caplog.records if r.levelno == logging.ERROR and "disk on fire" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info is not None  # logged once, with its traceback

        clock.now += 30.0
        response = await api.get("/health")
        assert response.status == 200
        assert await response.json() == {"status": "ok", "node": "disk-1", "ready": True, "durable": True,
                                         "version": VERSION}


async def test_health_says_why_storage_is_unhealthy(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node, TestClient(TestServer(create_app(node))) as api:
        await node.update("k", Increment(amount=1))
        with sqlite3.connect(disk_config.data_dir / DB_FILE) as db:
            db.execute("DROP TABLE log")
        with pytest.raises(StorageError):
            await node.update("k", Increment(amount=1))
        response = await api.get("/health")
        assert response.status == 503
        assert (await response.json())["failing"] == {"storage": "commit failed: OperationalError: no such table: log"}


class BrokenReplication(Standalone):
    """A replication layer whose stop raises, as a leave announcement on a broken network might."""

    async def stop(self) -> None:
        raise RuntimeError("leave announcement blew up")


async def test_stop_checkpoints_and_closes_storage_even_when_replication_stop_raises(
    disk_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(disk_config, replication=BrokenReplication())
    await node.start()
    await node.update("k", Increment(amount=3))
    await node.stop()  # logs, does not raise
    assert node.storage.failure == "storage is closed"
    assert any("stopping replication failed" in r.getMessage() and r.exc_info for r in caplog.records)
    with sqlite3.connect(disk_config.data_dir / DB_FILE) as db:
        assert db.execute("SELECT count(*) FROM log").fetchone() == (0,)  # the final checkpoint folded it
    async with Node(disk_config) as again:
        item = again.keyspace.item("k")
        assert item is not None and item.value == 3


async def test_stop_closes_storage_even_when_the_final_checkpoint_raises(
    disk_config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(disk_config)
    await node.start()
    await node.update("k", Increment(amount=2))

    def broken(max_keys: int, *, everything: bool = False) -> int:
        raise ValueError("cannot encode")

    node.checkpoint = broken  # type: ignore[method-assign]
    await node.stop()
    assert node.storage.failure == "storage is closed"
    assert any("final checkpoint failed" in r.getMessage() for r in caplog.records)
    async with Node(disk_config) as again:  # the log still had it
        item = again.keyspace.item("k")
        assert item is not None and item.value == 2


def served_config() -> ServerConfig:
    return ServerConfig(in_memory=True, node_id="served", http_addr="127.0.0.1:0", gossip_addr="127.0.0.1:0",
                        timing="local")


async def test_serve_stops_gracefully_and_exits_1_after_a_fatal_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[Node] = []

    class DoomedNode(Node):
        async def start(self) -> None:
            await super().start()
            started.append(self)
            self.supervisor.supervise("doomed", self._doomed, critical=True)

        async def _doomed(self) -> None:
            raise RuntimeError("cannot go on")

    monkeypatch.setattr(serve_module, "Node", DoomedNode)
    monkeypatch.setattr(serve_module, "tune_collector", lambda: None)  # process-wide GC settings: not in a test run
    async with asyncio.timeout(5):
        assert await serve_module.serve(served_config()) == 1
    assert started[0].storage.failure == "storage is closed"
    fatal = [r.getMessage() for r in caplog.records if r.name == "rumor.server.serve" and r.levelno == logging.ERROR]
    assert fatal == ["node served: doomed failed fatally (RuntimeError: cannot go on); shutting down"]


async def test_serve_exits_0_on_a_requested_stop_even_if_stopping_replication_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    started: list[Node] = []

    class StoppedAtOnce(Node):
        async def start(self) -> None:
            await super().start()
            started.append(self)
            stop.set()  # as SIGTERM would

    async def broken_stop(self: GossipReplication) -> None:
        raise RuntimeError("leave failed")

    monkeypatch.setattr(serve_module, "Node", StoppedAtOnce)
    monkeypatch.setattr(serve_module, "tune_collector", lambda: None)
    monkeypatch.setattr(GossipReplication, "stop", broken_stop)
    async with asyncio.timeout(5):
        assert await serve_module.serve(served_config(), stop=stop) == 0
    assert started[0].storage.failure == "storage is closed"
    assert any("stopping replication failed" in r.getMessage() for r in caplog.records)
