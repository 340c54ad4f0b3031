"""A restarted node's start time and memory, and its memory once every key was read, with and without a budget for
decoded states (issue 14's first steps: states decoded on first use, `server/state_cache.py`).

Loads --keys small mixed keys (a third counters, sets, registers) into an embedded durable node through
`Node.update_batch` (1,000 a batch), stops it, then starts it twice in fresh processes: with --budget-mib of
`state_cache_bytes` and with an unbounded cache (every state read stays decoded: the memory the node needed before
the cache). Each reports its start time, its RSS growth after start, and after reading every key (the checkpoint
round, which evicts, runs every 5,000 reads).

    .venv/bin/python bench/restart_probe.py [--keys 300000] [--budget-mib 64] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.updates import Increment, RegisterWrite, SetChange, Update


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def load(data_dir: Path, keys: int) -> None:
    async with Node(ServerConfig(data_dir=data_dir, node_id="probe")) as node:
        for start in range(0, keys, 1000):
            writes: list[tuple[str, Update, str | None]] = []
            for i in range(start, min(start + 1000, keys)):
                update = (Increment(amount=1), SetChange(add=(i % 7, "x")), RegisterWrite(value=f"v{i}"))[i % 3]
                writes.append((f"k{i:08d}", update, None))
            await node.update_batch(writes)


async def restart(data_dir: Path, budget: int | None) -> dict[str, Any]:
    config = ServerConfig(data_dir=data_dir, node_id="probe", checkpoint_interval_s=3600,
                          state_cache_bytes=budget if budget is not None else 1 << 50)
    base = _rss_mib()
    started = time.perf_counter()
    node = Node(config)
    await node.start()
    start_s = time.perf_counter() - started
    after_start = _rss_mib() - base
    keys = list(node.keyspace)
    for i, key in enumerate(keys):
        await node.read(key)
        if i % 5000 == 4999:
            node.checkpoint_round()
    node.checkpoint_round()
    gc.collect()
    figures = {"restart_s": round(start_s, 2), "rss_mib_after_start": round(after_start, 1),
               "rss_mib_after_reading_every_key": round(_rss_mib() - base, 1),
               "decoded_states": len(node.keyspace.cache), "cache_estimate_mib": round(node.keyspace.cache.bytes / 2**20, 1)}
    await node.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "load":
        asyncio.run(load(args.data_dir, args.keys))
        return
    if args.phase in ("bounded", "unbounded"):
        budget = args.budget_mib << 20 if args.phase == "bounded" else None
        print(json.dumps(asyncio.run(restart(args.data_dir, budget))))
        return
    out: dict[str, Any] = {"keys": args.keys, "budget_mib": args.budget_mib}
    with tempfile.TemporaryDirectory(prefix="rumor-restart-probe-") as tmp:
        data = Path(tmp) / "data"
        me = [sys.executable, __file__, "--keys", str(args.keys), "--budget-mib", str(args.budget_mib),
              "--data-dir", str(data)]
        started = time.perf_counter()
        subprocess.run([*me, "--phase", "load"], check=True, timeout=1800)
        out["load_s"] = round(time.perf_counter() - started, 1)
        for phase in ("bounded", "unbounded"):
            run = subprocess.run([*me, "--phase", phase], check=True, timeout=1800, capture_output=True, text=True)
            out[phase] = json.loads(run.stdout)
    if args.json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
