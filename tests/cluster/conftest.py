"""Multi-process clusters of `rumor serve` on loopback (`--preset local`) for the integration tests in this folder.

A module shares one cluster (starting three processes costs seconds); each test leaves it healed. Every wait is a
deadline-bounded poll of the HTTP API (`LocalCluster.wait_*`); when a test fails, the nodes' log tails are printed.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Generator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from rumor.server.local_cluster import LocalCluster


async def started_cluster(n: int, node_args: dict[str, Sequence[str]] | None = None) -> AsyncIterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="rumor-test-cluster-") as base:
        async with LocalCluster(n, Path(base), preset="local", node_args=node_args) as cluster:
            await cluster.wait_members(timeout_s=20)
            yield cluster


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def skewed_cluster() -> AsyncIterator[LocalCluster]:
    """Three nodes; n3's clock runs an hour behind the others'."""
    async for cluster in started_cluster(3, {"n3": ["--clock-offset-ms", "-3600000"]}):
        yield cluster


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster3() -> AsyncIterator[LocalCluster]:
    async for cluster in started_cluster(3):
        yield cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                             pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, LocalCluster):
                report.sections.append(("rumor node logs", value.logs()))
    return report
