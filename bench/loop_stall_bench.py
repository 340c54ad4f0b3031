"""Event-loop lag while a big set syncs and under a write load with checkpoints: big-state work off the loop
(`server/offload.py`) against the same work inline (the baseline, `Offloader(enabled=False)`), in one run.

    .venv/bin/python bench/loop_stall_bench.py             # a 1M-element set
    .venv/bin/python bench/loop_stall_bench.py --quick     # 200k elements, shorter write load
    .venv/bin/python bench/loop_stall_bench.py --json      # one JSON object

Each mode runs two nodes in this process (durable storage in a temporary directory, gossip on loopback with the
`lan` timers: a probe every second, answered within 0.5 s), so the loop's lag is the worse of the two nodes' at
every moment; a sampler task asks to wake every 10 ms and records how late it woke.

1. big set sync: n1 holds a set of `elements` elements, n2 10 of its own; n2 starts, joins n1, and anti-entropy
   runs until both hold the same set (their causal contexts are equal). Lag from n2's start to then.
2. write load with checkpoints: 4 writers of 100 small updates a batch on n1 (5000 keys), plus one add to the big
   set every 0.2 s; checkpoints fold the big set whenever its oldest log record is 2000 records behind, so the
   checkpointer encodes the big state several times during the phase. Lag during the load.

False suspicions: any member seen suspect or dead by the other during a phase (both run all along).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.memberlist import Memberlist
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.offload import Offloader
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.member_meta import advertised
from rumor.server.replication.runtime import GossipReplication
from rumor.server.updates import Increment, SetChange

GOSSIP = Config.lan()
SAMPLE_S = 0.01
LOAD_CHUNK = 20_000
SMALL_KEYS = 5000


class LagSampler:
    """Wakes every `SAMPLE_S` and records how late; `take()` returns the lags since the last take."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + SAMPLE_S
            await asyncio.sleep(SAMPLE_S)
            self.lags.append(max(0.0, time.perf_counter() - due))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def take(self) -> dict[str, Any]:
        lags, self.lags = sorted(self.lags), []
        if not lags:
            return {"ticks": 0, "p99_ms": None, "max_ms": None}
        p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)]
        return {"ticks": len(lags), "p99_ms": round(1000 * p99, 1), "max_ms": round(1000 * lags[-1], 1)}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Suspicions:
    """Counts suspect/dead sightings of the other node, by any node."""

    def __init__(self) -> None:
        self.count = 0
        self.events: list[str] = []

    def listen(self, node_id: str, memberlist: Memberlist) -> None:
        def heard(_old: Member | None, new: Member) -> None:
            if new.id != node_id and new.status in (MemberStatus.SUSPECT, MemberStatus.DEAD):
                self.count += 1
                self.events.append(f"{node_id} saw {new.id} {new.status.name.lower()}")

        memberlist.member_listeners.append(heard)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def memberlist_factory(delegate: Delegate, node_id: str) -> Memberlist:
    transport = AsyncioTransport(("127.0.0.1", 0), None, GOSSIP.max_packet_bytes, GOSSIP.max_stream_bytes)
    # the metadata `rumor serve` publishes: peers then send big keys as context rows (`member_meta`)
    return Memberlist(GOSSIP, node_id, transport, delegate=delegate, meta=msgpack.packb(advertised()))


async def start_node(base: Path, name: str, offload: bool, seeds: tuple[Any, ...],
                     suspicions: Suspicions) -> Node:
    replication = GossipReplication(ReplicationConfig(seeds=seeds), memberlist_factory,
                                    offloader=Offloader(enabled=offload))
    config = ServerConfig(data_dir=base / name, node_id=name, checkpoint_max_log_records=2000)
    node = Node(config, replication=replication, offloader=Offloader(enabled=offload))
    await node.start()
    assert replication.memberlist is not None
    suspicions.listen(name, replication.memberlist)
    return node


def same_set(a: Node, b: Node) -> bool:
    ea, eb = a.keyspace.entry("big"), b.keyspace.entry("big")
    return ea is not None and eb is not None and ea.state.context() == eb.state.context()


async def run_mode(base: Path, offload: bool, elements: int, write_s: float, bound_s: float) -> dict[str, Any]:
    sampler, suspicions = LagSampler(), Suspicions()
    n1 = await start_node(base, "n1", offload, (), suspicions)
    n2: Node | None = None
    out: dict[str, Any] = {"offload": offload}
    try:
        for first in range(0, elements, LOAD_CHUNK):
            await n1.update_batch([("big", SetChange(add=tuple(range(first, min(first + LOAD_CHUNK, elements)))), None)])
        await n1.update_batch([(f"k{i:05d}", Increment(amount=1), None) for i in range(SMALL_KEYS)])
        assert isinstance(n1.replication, GossipReplication) and n1.replication.memberlist is not None
        seed = n1.replication.memberlist.transport.local_address
        sampler.start()
        sampler.take()
        suspicions.take()
        started = time.monotonic()
        n2 = await start_node(base, "n2", offload, (seed,), suspicions)
        await n2.update_batch([("big", SetChange(add=tuple(f"n2-{i}" for i in range(10))), None)])
        while not same_set(n1, n2) and time.monotonic() - started < bound_s:
            await asyncio.sleep(0.05)
        synced = same_set(n1, n2)
        out["big_set_sync"] = {"elements": elements, "synced": synced,
                               "seconds": round(time.monotonic() - started, 2), **sampler.take(),
                               "false_suspicions": suspicions.take()}
        out["write_load"] = {**await write_load(n1, write_s), **sampler.take(), "false_suspicions": suspicions.take()}
    finally:
        await sampler.stop()
        for node in (n2, n1):
            if node is not None:
                await node.stop()
    return out


async def write_load(node: Node, seconds: float) -> dict[str, Any]:
    rng = random.Random(7)
    deadline = time.monotonic() + seconds
    ops = 0
    checkpoints = node.metrics.checkpoints

    async def writer() -> None:
        nonlocal ops
        while time.monotonic() < deadline:
            await node.update_batch([(f"k{rng.randrange(SMALL_KEYS):05d}", Increment(amount=1), None)
                                     for _ in range(100)])
            ops += 100

    async def big_adds() -> None:
        i = 0
        while time.monotonic() < deadline:
            # update_batch, not update: a write's answer renders the value, a whole set's elements
            await node.update_batch([("big", SetChange(add=(f"later-{i}",)), None)])
            i += 1
            await asyncio.sleep(0.2)

    before = _counter(checkpoints)
    started = time.monotonic()
    await asyncio.gather(*(writer() for _ in range(4)), big_adds())
    elapsed = time.monotonic() - started
    return {"seconds": round(elapsed, 1), "ops_per_s": round(ops / elapsed), "checkpoints": _counter(checkpoints) - before}


def _counter(counter: Any) -> int:
    return int(counter.get())


async def run(elements: int, write_s: float, bound_s: float, modes: tuple[bool, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"elements": elements}
    with tempfile.TemporaryDirectory(prefix="rumor-loop-stall-") as tmp:
        for offload in modes:
            name = "offloaded" if offload else "inline"
            print(f"{name}: running", file=sys.stderr)
            out[name] = await run_mode(Path(tmp) / name, offload, elements, write_s, bound_s)
            print(f"{name}: {json.dumps(out[name])}", file=sys.stderr)
    return out


def table(out: dict[str, Any]) -> str:
    lines = [f"{'phase':<14} {'mode':<10} {'lag p99 ms':>10} {'lag max ms':>10} {'susp.':>5}  other"]
    for phase in ("big_set_sync", "write_load"):
        for mode in ("inline", "offloaded"):
            if mode not in out:
                continue
            row = out[mode][phase]
            other = (f"synced={row['synced']} in {row['seconds']} s" if phase == "big_set_sync"
                     else f"{row['ops_per_s']} ops/s, {row['checkpoints']} checkpoints")
            lines.append(f"{phase:<14} {mode:<10} {row['p99_ms']!s:>10} {row['max_ms']!s:>10} "
                         f"{row['false_suspicions']:>5}  {other}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k elements, 4 s of writes")
    parser.add_argument("--elements", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=("inline", "offloaded"), help="run one mode (to profile it)")
    args = parser.parse_args()
    elements = args.elements or (200_000 if args.quick else 1_000_000)
    modes = (False, True) if args.only is None else (args.only == "offloaded",)
    out = asyncio.run(run(elements, 4.0 if args.quick else 10.0, 120.0 if args.quick else 300.0, modes))
    print(json.dumps(out) if args.json else table(out))


if __name__ == "__main__":
    main()
