"""Three nodes on three "hosts": each `rumor serve` process in a network namespace of its own (`bench.chaos.netns`:
a bridge, a veth and an address per namespace), bound to 0.0.0.0 and advertising its namespace's address, joining
through one seed *name* that each namespace's /etc/hosts resolves to all three addresses (what DNS does for a
Kubernetes headless Service; the nodes use the system resolver). Then a rolling restart under write load
(`bench/rolling_bench.py`) must lose no acknowledged write.

Needs root, `ip` and `nft` (CI has them: `.ci/run`); anywhere else the module is skipped, saying why. The loopback
variants of what this checks run everywhere (`tests/server/test_multihost_loopback.py`).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bench.chaos.netns import GOSSIP_PORT, HTTP_PORT, NetnsNetwork, NetworkSetupError, make_network
from bench.rolling_bench import MEMBERS_TIMEOUT_S, NODES, SEED_NAME, RollingCluster, rolling_restart

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
#: the rolling restart takes about 20 s here; bounded so a hang fails instead of stalling CI
ROLLING_BOUND_S = 180.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster() -> AsyncIterator[RollingCluster]:
    try:
        network = make_network(NODES, random.Random(16), "netns")
    except NetworkSetupError as exc:
        pytest.skip(f"network namespaces unavailable ({exc}); the loopback variants are in tests/server/")
    assert isinstance(network, NetnsNetwork)
    with tempfile.TemporaryDirectory(prefix="rumor-multihost-") as base:
        started = RollingCluster(network, Path(base))
        try:
            await started.start_all()
            await started.wait_members(MEMBERS_TIMEOUT_S)
            yield started
        finally:
            await started.close()
            network.teardown()


def hosts(cluster: RollingCluster) -> dict[str, str]:
    assert isinstance(cluster.network, NetnsNetwork)
    return cluster.network.hosts


async def test_each_node_is_known_by_its_advertised_addresses_not_its_bind(cluster: RollingCluster) -> None:
    for viewer in NODES:
        rows = {row["id"]: row for row in await cluster.view(viewer)}
        assert set(rows) == set(NODES)
        for name, row in rows.items():
            assert row["status"] == "alive"
            assert row["gossip_addr"] == f"{hosts(cluster)[name]}:{GOSSIP_PORT}"
            assert row["http_addr"] == f"{hosts(cluster)[name]}:{HTTP_PORT}"


async def test_rumor_join_contacts_every_address_of_a_seed_name(cluster: RollingCluster) -> None:
    """The node resolves the name in its own namespace (its /etc/hosts): three addresses, its own skipped."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "rumor.server.cli", "join", f"{SEED_NAME}:{GOSSIP_PORT}",
                         "--node", cluster.nodes["n1"].http_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    others = sorted(f"{hosts(cluster)[name]}:{GOSSIP_PORT}" for name in ("n2", "n3"))
    assert sorted(answer["addresses"]) == others and answer["contacted"] == 2 and answer["unresolved"] == {}


async def test_a_rolling_restart_under_write_load_loses_no_acknowledged_write(cluster: RollingCluster) -> None:
    figures = await asyncio.wait_for(rolling_restart(cluster, settle_s=1.0), ROLLING_BOUND_S)
    print(json.dumps(figures))
    assert figures["rolling_restart_lost_acked"] == 0, figures["lost_examples"]
    assert set(figures["restart_s"]) == set(NODES)  # every node was restarted, and the cluster was whole after each
    assert figures["acked_writes"] > 0 and figures["failover_client_acked"] > 0
    assert figures["failover_client_errors"] == 0  # one node down at a time: a client with failover never fails
    for name in NODES:
        assert 0 < figures["rolling_restart_unavailable_s"][name] < MEMBERS_TIMEOUT_S
