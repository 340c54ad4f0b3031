"""One chaos run, start to end: cluster up, clients and nemesis for the duration, heal, quiet period, membership and
final reads recorded into the history. Checking is separate (`bench.chaos.checkers` reads only the history).

Whatever happens (a checker-independent failure, Ctrl-C, SIGTERM), every process is killed and every namespace,
veth and bridge removed before this returns or raises; an `atexit` hook does the same if the loop dies first.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.chaos.cluster import ChaosCluster
from bench.chaos.history import HistoryWriter
from bench.chaos.nemesis import KINDS, Nemesis, make_schedule
from bench.chaos.netns import make_network
from bench.chaos.workload import KEYS, Client


@dataclass
class RunConfig:
    out_dir: Path
    seed: int = 1
    nodes: int = 5
    duration_s: float = 60.0
    faults: list[str] = field(default_factory=lambda: list(KINDS))
    clients_per_node: int = 2
    quiet_s: float = 5.0
    converge_timeout_s: float = 60.0
    members_timeout_s: float = 30.0
    network: str = "auto"  # auto | netns | hook
    preset: str = "local"


@dataclass
class RunResult:
    history: Path
    partition_mode: str
    faults_injected: dict[str, int]
    out_dir: Path
    wall_s: float
    logs: str = ""


async def run(config: RunConfig) -> RunResult:
    started = time.monotonic()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    names = [f"n{i}" for i in range(1, config.nodes + 1)]
    network = make_network(names, random.Random(), config.network)  # names must differ between runs: not seeded
    cluster = ChaosCluster(names, network, config.out_dir, config.preset)
    atexit.register(_last_resort, cluster, network)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    history = HistoryWriter(config.out_dir / "history.jsonl")
    nemesis = Nemesis(cluster, history)
    try:
        rng = random.Random(config.seed)
        schedule = make_schedule(rng, config.faults, config.duration_s, names)
        history.write({"meta": {
            "nodes": names, "keys": KEYS, "seed": config.seed, "partition_mode": network.mode,
            "duration_s": config.duration_s, "faults": config.faults, "majority": len(names) // 2 + 1,
            "quiet_s": config.quiet_s, "converge_timeout_s": config.converge_timeout_s,
            "members_timeout_s": config.members_timeout_s,
            "http": {n: network.http_addr(n) for n in names}, "gossip": {n: network.gossip_addr(n) for n in names},
            "schedule": [vars(f) for f in schedule]}})
        await cluster.start_all()
        history.mark("started")
        with contextlib.suppress(TimeoutError):
            await cluster.wait_members(30.0)
        history.mark("members_alive")
        await _workload(config, cluster, history, nemesis, schedule)
        history.mark("nemesis_done")
        await nemesis.heal()
        history.mark("healed")
        await asyncio.sleep(config.quiet_s)
        history.mark("quiet_done")
        urls = {n: cluster[n].http_url for n in names}
        final = Client("final", names[0], urls, history, random.Random(0), op_timeout_s=5.0)
        await _members_rounds(cluster, history, config.members_timeout_s)
        await _final_rounds(final, history, config.converge_timeout_s)
        history.mark("done")
        return RunResult(history.path, network.mode, dict(nemesis.injected), config.out_dir,
                         time.monotonic() - started)
    finally:
        history.close()
        await asyncio.shield(cluster.close())
        network.teardown()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        atexit.unregister(_last_resort)


def _last_resort(cluster: ChaosCluster, network: Any) -> None:
    cluster.kill_now()
    network.teardown()


async def _workload(config: RunConfig, cluster: ChaosCluster, history: HistoryWriter, nemesis: Nemesis,
                    schedule: list[Any]) -> None:
    urls = {n: cluster[n].http_url for n in cluster.names}
    clients = [Client(f"c{i * config.clients_per_node + j}", node, urls, history,
                      random.Random(config.seed * 1_000 + i * config.clients_per_node + j))
               for i, node in enumerate(cluster.names) for j in range(config.clients_per_node)]
    stop = asyncio.Event()
    client_tasks = [asyncio.create_task(client.run(stop)) for client in clients]
    nemesis_task = asyncio.create_task(nemesis.run(schedule, stop_at_s=config.duration_s))
    try:
        await asyncio.sleep(max(0.0, config.duration_s - history.now()))
        # A fault under way finishes (bounded) so nothing is left stopped; clients keep going meanwhile.
        await asyncio.wait_for(asyncio.shield(nemesis_task), timeout=120.0)
    finally:
        if not nemesis_task.done():  # interrupted: its record is still written, then the caller cleans up
            nemesis_task.cancel()
            await asyncio.wait([nemesis_task], timeout=10.0)
        stop.set()
        _, pending = await asyncio.wait(client_tasks, timeout=30.0)
        for task in pending:
            task.cancel()
        for task in client_tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def _members_rounds(cluster: ChaosCluster, history: HistoryWriter, timeout_s: float) -> None:
    """Every node's /v1/members, polled until each shows all alive or the bound passes; every poll recorded."""
    deadline = time.monotonic() + timeout_s
    round_no = 0
    while True:
        all_alive = True
        for name in cluster.names:
            record: dict[str, Any] = {"id": history.new_id(), "client": "final", "node": name, "f": "members",
                                      "key": None, "args": {}, "phase": "final", "round": round_no,
                                      "invoke_s": history.now()}
            try:
                view = await cluster.members(name)
                record.update(status="ok", http_status=200, response=view)
                all_alive &= all(view.get(other) == "alive" for other in cluster.names)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
                record.update(status="unknown", http_status=None, response={"error": type(exc).__name__})
                all_alive = False
            record["complete_s"] = history.now()
            history.write(record)
        if all_alive or time.monotonic() > deadline:
            return
        round_no += 1
        await asyncio.sleep(0.5)


async def _final_rounds(reader: Client, history: HistoryWriter, timeout_s: float) -> None:
    """Every key on every node, round after round, until all nodes agree on value and context or the bound."""
    deadline = time.monotonic() + timeout_s
    round_no = 0
    async with reader.opened():
        while True:
            records = await reader.final_round(sorted(KEYS), round_no)
            states: dict[str, set[str]] = {}
            for r in records:
                body = r.get("response") or {}
                state = repr((body.get("value"), body.get("context"))) if r["status"] == "ok" else f"failed {r['id']}"
                states.setdefault(r["key"], set()).add(state)
            if all(len(s) == 1 for s in states.values()) or time.monotonic() > deadline:
                return
            round_no += 1
            await asyncio.sleep(0.5)
