"""Memory per key of a disk-backed keyspace (issue 14: keys and digests bounded by disk, not RAM), its restart time,
and the in-memory baseline (the same node with an unbounded cache) in the same run.

For each --sizes N: builds N small mixed keys (a third counters, sets, registers, each its own state) and loads them
through the bulk path (`Node.install_stored`: raw rows straight to the states table with their digests, 5,000 a
batch), in a fresh process; then, in fresh processes, restarts the node with --budget-mib of `state_cache_bytes`
(and with an unbounded cache, the baseline) and attaches the anti-entropy digest index as replication does
(`digests.digest_index_for`). Each phase reports its RSS growth over a process that imported everything, and per
key: after the load; after the restart (start to serving, and to the hash tree being ready); and after reading
--reads random keys (every key when 0), with the checkpoint round (which evicts) every 2,000 reads.

    .venv/bin/python bench/disk_keyspace_probe.py [--sizes 1000000] [--budget-mib 64] [--reads 200000] [--json]

RSS is bounded when the bytes per key fall as N grows (cache plus fixed overhead, over more keys); the baseline's
grow with the keys read.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rumor.crdt import encode
from rumor.server.config import ServerConfig
from rumor.server.hlc_source import HLCSource
from rumor.server.node import Node
from rumor.server.replication.digests import digest_index_for
from rumor.server.updates import Increment, RegisterWrite, SetChange, make_delta, new_state

BATCH = 5000
#: reads between two checkpoint rounds (which evict): about what a node serving reads at this rate fits in the
#: default 0.25 s between rounds
READS_PER_ROUND = 2000
TYPES = ("counter", "set", "register")
MIB = 2**20


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def key_of(i: int) -> str:
    return f"k{i:09d}"


class Rows:
    """Small states as a node that wrote them would store them: a counter (100 amounts), a set (7 elements) or a
    register (1,000 values) per key, each encoded once and shared by the keys of that shape (building a state per
    key would make the load three times slower and change nothing here: memory and reads are per key)."""

    def __init__(self) -> None:
        self._hlc = HLCSource()
        self._encoded: dict[tuple[int, int], bytes] = {}

    def _state(self, kind: int, variant: int) -> bytes:
        held = self._encoded.get((kind, variant))
        if held is None:
            update = (Increment(amount=variant + 1), SetChange(add=(variant, "x")),
                      RegisterWrite(value=f"v{variant}"))[kind]
            state = new_state(TYPES[kind])
            state.merge(make_delta(state, update, "origin", self._hlc))
            held = self._encoded[(kind, variant)] = encode(state)
        return held

    def __call__(self, start: int, stop: int) -> list[tuple[str, str, bytes]]:
        return [(key_of(i), TYPES[i % 3], self._state(i % 3, i % (100, 7, 1000)[i % 3])) for i in range(start, stop)]


def config(data_dir: Path, budget: int | None) -> ServerConfig:
    return ServerConfig(data_dir=data_dir, node_id="probe", checkpoint_interval_s=3600,
                        state_cache_bytes=budget if budget is not None else 1 << 50)


async def load(data_dir: Path, keys: int, budget: int) -> dict[str, Any]:
    rows = Rows()
    base = _rss_mib()
    async with Node(config(data_dir, budget)) as node:
        started = time.perf_counter()
        for start in range(0, keys, BATCH):
            commit = node.install_stored(rows(start, min(start + BATCH, keys)))
            if commit is not None:
                await commit
        await node.storage.flush()
        await asyncio.sleep(0)
        load_s = time.perf_counter() - started
        node.checkpoint_round()
        gc.collect()
        grown = _rss_mib() - base
        figures = {"load_s": round(load_s, 1), "load_keys_per_s": round(keys / load_s),
                   "rss_mib": round(grown, 1), "rss_bytes_per_key": round(grown * MIB / keys),
                   "resident_keys": node.keyspace.resident}
    return figures


async def restart(data_dir: Path, keys: int, budget: int | None, reads: int) -> dict[str, Any]:
    base = _rss_mib()
    started = time.perf_counter()
    node = Node(config(data_dir, budget))
    await node.start()
    serving_s = time.perf_counter() - started
    digests = digest_index_for(node.keyspace, lambda key: None)  # what replication attaches at its start
    tree_s = time.perf_counter() - started
    total_after_start = _rss_mib()
    after_start = total_after_start - base
    assert len(node.keyspace) == keys and len(digests.tree) == keys, (len(node.keyspace), len(digests.tree))
    sample = random.Random(1).sample(range(keys), min(reads or keys, keys))
    read_started = time.perf_counter()
    for n, i in enumerate(sample):
        item = await node.read(key_of(i))
        assert item is not None
        if n % READS_PER_ROUND == READS_PER_ROUND - 1:
            node.checkpoint_round()
    read_s = time.perf_counter() - read_started
    node.checkpoint_round()
    gc.collect()
    total = _rss_mib()
    grown = total - base
    figures = {"serving_s": round(serving_s, 2), "tree_ready_s": round(tree_s, 2),
               "rss_mib_total_after_start": round(total_after_start, 1), "rss_mib_total_after_reads": round(total, 1),
               "rss_mib_after_start": round(after_start, 1),
               "rss_bytes_per_key_after_start": round(after_start * MIB / keys),
               "reads": len(sample), "read_us": round(read_s / len(sample) * 1e6, 1),
               "rss_mib_after_reads": round(grown, 1), "rss_bytes_per_key_after_reads": round(grown * MIB / keys),
               "resident_keys": node.keyspace.resident, "tree_overlay_keys": getattr(digests.tree, "overlaid", None)}
    await node.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated key counts")
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--reads", type=int, default=200_000, help="random keys read after a restart (0: all)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = args.budget_mib * MIB
    if args.phase == "load":
        print(json.dumps(asyncio.run(load(args.data_dir, args.keys, budget))))
        return
    if args.phase in ("bounded", "unbounded"):
        chosen = budget if args.phase == "bounded" else None
        print(json.dumps(asyncio.run(restart(args.data_dir, args.keys, chosen, args.reads))))
        return
    out: dict[str, Any] = {"budget_mib": args.budget_mib, "reads": args.reads, "sizes": {}}
    for keys in (int(size) for size in args.sizes.split(",")):
        figures: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="rumor-disk-probe-") as tmp:
            me = [sys.executable, __file__, "--keys", str(keys), "--budget-mib", str(args.budget_mib),
                  "--reads", str(args.reads), "--data-dir", str(Path(tmp) / "data")]
            for phase in ("load", "bounded", "unbounded"):
                run = subprocess.run([*me, "--phase", phase], check=True, timeout=3600, capture_output=True,
                                     text=True)
                figures[phase] = json.loads(run.stdout)
            figures["db_mib"] = round(sum(f.stat().st_size for f in (Path(tmp) / "data").iterdir()) / MIB, 1)
        out["sizes"][str(keys)] = figures
        if not args.json:
            print(f"-- {keys:,} keys (database {figures['db_mib']} MiB)", flush=True)
            for phase in ("load", "bounded", "unbounded"):
                print(f"   {phase:10} {figures[phase]}", flush=True)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
