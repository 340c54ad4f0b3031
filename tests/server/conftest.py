"""Fixtures for the server tests: started nodes (in memory and on disk) and aiohttp test clients over them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rumor.server.config import ServerConfig
from rumor.server.http_api import create_app
from rumor.server.node import Node


class ManualMs:
    """An injected physical clock (ms) the test moves by hand."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> ManualMs:
    return ManualMs()


@pytest.fixture
async def node(clock: ManualMs) -> AsyncIterator[Node]:
    async with Node(ServerConfig(in_memory=True, node_id="n1"), physical_ms=clock) as started:
        yield started


@pytest.fixture
async def make_api() -> AsyncIterator[Callable[..., Any]]:
    """Builds (node, client) pairs with config overrides; all are torn down after the test."""
    opened: list[tuple[TestClient, Node]] = []

    async def build(**config: Any) -> tuple[Node, TestClient]:
        config.setdefault("in_memory", True)
        config.setdefault("node_id", "n1")
        started = Node(ServerConfig(**config))
        await started.start()
        client = TestClient(TestServer(create_app(started)))
        await client.start_server()
        opened.append((client, started))
        return started, client

    yield build
    for client, started in opened:
        await client.close()
        await started.stop()


@pytest.fixture
async def api(node: Node) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(node))) as client:
        yield client


@pytest.fixture
def disk_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", node_id="disk-1", checkpoint_interval_s=3600)
