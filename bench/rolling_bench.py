"""A rolling restart of a 3-node cluster of real processes under write load: does it lose anything, and how long is
each node unavailable while it restarts?

Where the nodes live: each in a network namespace of its own (`bench.chaos.netns`, needs root, `ip` and `nft`),
bound to every interface (``0.0.0.0``) and advertising its namespace's address (``--advertise-addr``), joining
through one seed *name* that the namespace's /etc/hosts resolves to every node's address (as DNS answers a
Kubernetes headless Service); otherwise on loopback, each with its own ports and the others' addresses as seeds.
The output says which (``network``).

The procedure is the one the README documents: for each node in turn, SIGTERM (it leaves gracefully and flushes),
start it again on the same data directory, and wait until it is ready and every node sees every node alive before
the next. Meanwhile one writer per node writes only to that node (a new key every 10 ms; what its failures add up
to is that node's unavailability), and one application client (`server.cluster_client.Client`) writes through all
three with failover. At the end every acknowledged write must be readable on every node.

Figures: ``rolling_restart_lost_acked`` (must be 0), ``rolling_restart_unavailable_s`` per node (from its writer's
first failed write to the next success), and the failover client's failures (``failover_client_errors``).

    .venv/bin/python bench/rolling_bench.py [--json] [--network auto|netns|hook]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos.cluster import ChaosCluster, ChaosNode
from bench.chaos.netns import GOSSIP_PORT, HTTP_PORT, NetnsNetwork, Network, make_network
from rumor.server.cluster_client import Client

NODES = ["n1", "n2", "n3"]
SEED_NAME = "rumor-seeds"
WRITE_INTERVAL_S = 0.01
CONVERGENCE_TIMEOUT_S = 60.0
MEMBERS_TIMEOUT_S = 30.0


class AdvertisingNode(ChaosNode):
    """In a namespace: binds every interface, advertises the namespace's address, joins through the seed name."""

    def serve_argv(self, seeds: list[str], preset: str) -> list[str]:
        argv = super().serve_argv(seeds, preset)
        if not isinstance(self.network, NetnsNetwork):
            return argv
        argv[argv.index("--http-addr") + 1] = f"0.0.0.0:{HTTP_PORT}"
        argv[argv.index("--gossip-addr") + 1] = f"0.0.0.0:{GOSSIP_PORT}"
        return [*argv, "--advertise-addr", self.network.hosts[self.name]]


class RollingCluster(ChaosCluster):
    def __init__(self, network: Network, base_dir: Path, preset: str = "local") -> None:
        super().__init__(NODES, network, base_dir, preset)
        self.nodes = {name: AdvertisingNode(name, network, base_dir) for name in NODES}
        if isinstance(network, NetnsNetwork):
            network.write_hosts({SEED_NAME: [network.hosts[name] for name in NODES]})

    def seeds_for(self, name: str) -> list[str]:
        if isinstance(self.network, NetnsNetwork):
            return [f"{SEED_NAME}:{GOSSIP_PORT}"]  # every node, itself included: the node skips its own address
        return super().seeds_for(name)

    async def view(self, name: str) -> list[dict[str, Any]]:
        async with self.session().get(f"{self.nodes[name].http_url}/v1/members") as resp:
            body = await resp.json()
        return list(body["members"])


@dataclass
class Writer:
    """Writes a new key every interval; keeps what was acknowledged and when writes failed."""

    name: str
    acked: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)  # (first failure, next success)
    _failing_since: float | None = None

    def ok(self, key: str, value: int) -> None:
        self.acked[key] = value
        if self._failing_since is not None:
            self.outages.append((self._failing_since, time.monotonic()))
            self._failing_since = None

    def failed(self) -> None:
        self.failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    @property
    def unavailable_s(self) -> float:
        return sum(end - start for start, end in self.outages)


async def write_to_node(cluster: RollingCluster, name: str, writer: Writer, stop: asyncio.Event) -> None:
    url = cluster.nodes[name].http_url
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        seq = 0
        while not stop.is_set():
            seq += 1
            key = f"{writer.name}-{seq}"
            try:
                async with session.put(f"{url}/v1/kv/{key}", json=seq) as resp:
                    await resp.read()
                    writer.ok(key, seq) if resp.status == 200 else writer.failed()
            except (aiohttp.ClientError, OSError, TimeoutError):
                writer.failed()
            await asyncio.sleep(WRITE_INTERVAL_S)


async def write_through_cluster(cluster: RollingCluster, writer: Writer, stop: asyncio.Event) -> None:
    urls = [cluster.nodes[name].http_url for name in NODES]
    async with Client(urls, timeout_s=2.0, attempts=3, backoff_s=0.05) as client:
        seq = 0
        while not stop.is_set():
            seq += 1
            key = f"{writer.name}-{seq}"
            try:
                await client.put(key, seq)
                writer.ok(key, seq)
            except Exception:  # any failure is a failed write: the figure counts them
                writer.failed()
            await asyncio.sleep(WRITE_INTERVAL_S)


async def missing_on(cluster: RollingCluster, name: str, expected: dict[str, int]) -> list[str]:
    """Keys of ``expected`` that ``name`` does not hold with the acknowledged value (read in batches)."""
    keys = sorted(expected)
    missing: list[str] = []
    for start in range(0, len(keys), 1000):
        chunk = keys[start:start + 1000]
        async with cluster.session().post(f"{cluster.nodes[name].http_url}/v1/batch/get",
                                          json={"keys": chunk}) as resp:
            body = await resp.json()
        for result in body["results"]:
            if result["status"] != 200 or result["item"]["value"] != expected[result["key"]]:
                missing.append(result["key"])
    return missing


async def wait_converged(cluster: RollingCluster, expected: dict[str, int]) -> tuple[float, dict[str, list[str]]]:
    """Until every node holds every acknowledged write (bounded); returns the time taken and what is still missing."""
    started = time.monotonic()
    while True:
        missing: dict[str, list[str]] = {}
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError):
            missing = {name: await missing_on(cluster, name, expected) for name in NODES}
            missing = {name: keys for name, keys in missing.items() if keys}
            if not missing:
                return time.monotonic() - started, {}
        if time.monotonic() - started > CONVERGENCE_TIMEOUT_S:
            return time.monotonic() - started, missing or {"?": ["unreadable"]}
        await asyncio.sleep(0.25)


async def rolling_restart(cluster: RollingCluster, settle_s: float) -> dict[str, Any]:
    """Restarts each node in turn under write load; returns the figures (see the module docstring)."""
    stop = asyncio.Event()
    writers = {name: Writer(name) for name in NODES}
    through = Writer("client")
    tasks = [asyncio.create_task(write_to_node(cluster, name, writers[name], stop)) for name in NODES]
    tasks.append(asyncio.create_task(write_through_cluster(cluster, through, stop)))
    restart_s: dict[str, float] = {}
    try:
        await asyncio.sleep(settle_s)
        for name in NODES:
            began = time.monotonic()
            await cluster.nodes[name].terminate()
            await cluster.start_node(name)
            await cluster.wait_members(MEMBERS_TIMEOUT_S)
            restart_s[name] = round(time.monotonic() - began, 2)
            await asyncio.sleep(settle_s)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = {k: v for w in [*writers.values(), through] for k, v in w.acked.items()}
    converged_s, missing = await wait_converged(cluster, expected)
    lost = sorted({key for keys in missing.values() for key in keys})
    return {
        "rolling_restart_lost_acked": len(lost),
        "rolling_restart_unavailable_s": {name: round(w.unavailable_s, 3) for name, w in writers.items()},
        "acked_writes": len(expected),
        "failed_writes_per_node": {name: w.failures for name, w in writers.items()},
        "failover_client_errors": through.failures,
        "failover_client_acked": len(through.acked),
        "restart_s": restart_s,
        "converged_s": round(converged_s, 2),
        "lost_examples": lost[:10],
    }


@contextlib.asynccontextmanager
async def started_cluster(network_mode: str = "auto", seed: int = 16) -> AsyncIterator[RollingCluster]:
    """A started 3-node `RollingCluster` (every node sees every node alive), torn down on exit."""
    network = make_network(NODES, random.Random(seed), network_mode)
    base = Path(tempfile.mkdtemp(prefix="rumor-rolling-"))
    cluster = RollingCluster(network, base)
    try:
        await cluster.start_all()
        await cluster.wait_members(MEMBERS_TIMEOUT_S)
        yield cluster
    except BaseException:
        print(cluster.logs(), file=sys.stderr)
        raise
    finally:
        await cluster.close()
        network.teardown()


async def run(network_mode: str = "auto", settle_s: float = 1.0, seed: int = 16) -> dict[str, Any]:
    async with started_cluster(network_mode, seed) as cluster:
        figures = await rolling_restart(cluster, settle_s)
        figures["network"] = cluster.network.mode
        return figures


def measure(network: str = "auto", settle_s: float = 1.0, seed: int = 16) -> dict[str, Any]:
    """The rolling-restart figures for `bench/ops_bench.py` (``network``: auto, netns or hook = loopback)."""
    return asyncio.run(run(network, settle_s, seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--network", choices=["auto", "netns", "hook"], default="auto",
                        help="netns needs root, ip and nft; hook is loopback")
    parser.add_argument("--settle-s", type=float, default=1.0, help="writing time before and after each restart")
    args = parser.parse_args()
    figures = measure(args.network, args.settle_s)
    if args.json:
        print(json.dumps(figures))
        return
    where = {"netns": "network namespaces (0.0.0.0 binds, advertised addresses, a seed name)",
             "hook": "loopback"}[figures["network"]]
    print(f"rolling restart of {len(NODES)} node processes under write load, on {where}")
    print(f"  acknowledged writes        {figures['acked_writes']}")
    print(f"  lost acknowledged writes   {figures['rolling_restart_lost_acked']}  (must be 0)")
    print(f"  failover client errors     {figures['failover_client_errors']}  "
          f"(of {figures['failover_client_acked']} acknowledged)")
    print(f"  converged after            {figures['converged_s']} s")
    print("  node   unavailable_s   failed writes   restart_s (stop, start, all alive)")
    for name in NODES:
        print(f"  {name:<6} {figures['rolling_restart_unavailable_s'][name]:>13.3f}   "
              f"{figures['failed_writes_per_node'][name]:>13}   {figures['restart_s'].get(name, float('nan')):>9.2f}")


if __name__ == "__main__":
    main()
