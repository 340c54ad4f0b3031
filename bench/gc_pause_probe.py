"""What the cyclic garbage collector holds a node's loop for, under CPython's own policy and under the served node's
(`server.collector`), and what the served policy leaves uncollected.

    .venv/bin/python bench/gc_pause_probe.py           # table, about a minute
    .venv/bin/python bench/gc_pause_probe.py --json    # one JSON object
    .venv/bin/python bench/gc_pause_probe.py --quick   # smaller cache, a smoke run

1. Cache churn, one subprocess per policy: a cache of `--states` small decoded states (a third each counters, sets and
   registers, decoded from their bytes as a node decodes cold keys) turns over: each step decodes a state, adds
   it and evicts the oldest. Every collection is timed (`CollectionPauses`), by generation. "cpython" is the
   interpreter's policy with the node's young threshold (4,000): a full collection whenever the survivors since the
   last one exceed a quarter of the long-lived objects. "served" is `tune_collector`: middle and full collections
   never start by themselves. Then one full collection is timed: what the hourly one (`gc_full_interval_s`) holds the loop for.
2. Leftover garbage, in process: a served node (`rumor serve`'s code, in memory, loopback) answers `--requests`
   requests from clients that open and close connections, under the served policy; then a full collection counts
   what young collections left (cyclic garbage that only a full collection frees) and how long it took.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rumor.crdt import GCounter, LWWRegister, ORSet, decode, encode
from rumor.crdt.hlc import HLCTimestamp
from rumor.server.collector import YOUNG_THRESHOLD, CollectionPauses, tune_collector
from rumor.server.metrics import Histogram


def small_states(n: int) -> list[bytes]:
    """Encoded small states, a third each counters, sets and registers (what a node's cold keys decode from)."""
    out: list[bytes] = []
    ts = HLCTimestamp(1_700_000_000_000, 0)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            state: Any = GCounter()
            state.merge(state.increment("n1", i + 1))
        elif kind == 1:
            state = ORSet()
            state.merge(state.add("n1", f"e{i}"))
        else:
            state = LWWRegister()
            state.merge(state.write("n1", f"v{i}", ts))
        out.append(encode(state))
    return out


def churn(policy: str, states: int, turnovers: int, big_elements: int) -> dict[str, Any]:
    """Runs in its own process: the cache fills, turns over ``turnovers`` times, a set of ``big_elements`` is
    decoded and kept; then one full collection is timed."""
    blobs = small_states(states)
    big_set = ORSet()
    for i in range(big_elements):
        big_set.merge(big_set.add("n2", i))
    big_set = encode(big_set)
    gc.collect()
    if policy == "served":
        tune_collector()
    else:
        _, middle, full = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, full)
    histogram = Histogram("probe_gc_pause_seconds", "", ("generation",), buckets=(0.001, 0.01, 0.02, 0.05, 0.1, 0.2))
    longest: dict[str, float] = {}

    def clock() -> float:
        return time.perf_counter()

    pauses = CollectionPauses(histogram, clock=clock)

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            record.started = clock()  # type: ignore[attr-defined]
        else:
            gen = str(info["generation"])
            longest[gen] = max(longest.get(gen, 0.0), clock() - record.started)  # type: ignore[attr-defined]

    gc.callbacks.extend([pauses, record])
    cache: OrderedDict[int, Any] = OrderedDict()
    started = time.perf_counter()
    for i, blob in enumerate(blobs):
        cache[i] = decode(blob)
    for turn in range(1, turnovers + 1):  # the cache turns over: decode, add, evict the oldest
        for i, blob in enumerate(blobs):
            cache[turn * states + i] = decode(blob)
            cache.popitem(last=False)
    big = decode(big_set)  # a received big value joins the keyspace
    churn_s = time.perf_counter() - started
    gc.callbacks.remove(record)
    gc.callbacks.remove(pauses)
    full_started = time.perf_counter()
    gc.collect()
    full_ms = (time.perf_counter() - full_started) * 1000
    counts = {gen: histogram.count(gen) for gen in ("0", "1", "2")}
    return {
        "policy": policy,
        "cached_states": len(cache),
        "big_set_elements": len(big),
        "tracked_objects": len(gc.get_objects()),
        "collections": counts,
        "max_pause_ms": {gen: round(longest.get(gen, 0.0) * 1000, 2) for gen in ("0", "1", "2")},
        "churn_s": round(churn_s, 2),
        "one_full_collection_ms": round(full_ms, 1),
    }


async def leftover(requests: int) -> dict[str, Any]:
    """A served node in this process, under the served policy; clients open and close connections."""
    import aiohttp

    from rumor.server.config import ServerConfig
    from rumor.server.serve import serve

    with socket.socket() as probe:  # a free loopback port for the node (the bench's own, closed before it binds)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServerConfig(in_memory=True, node_id="gc-probe", http_addr=f"127.0.0.1:{port}",
                          gossip_addr="127.0.0.1:0", timing="local", gc_full_interval_s=0)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop=stop))
    base = f"http://127.0.0.1:{port}"
    for _ in range(1000):  # bounded: until the node answers
        if task.done():
            raise RuntimeError("the node did not start")
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{base}/health") as r:
                if r.status == 200:
                    break
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.01)
    gc.collect()
    done = 0
    started = time.perf_counter()
    per_session = 100
    while done < requests:
        async with aiohttp.ClientSession() as session:
            for i in range(min(per_session, requests - done) // 2):
                key = f"k{(done + i) % 5000}"
                async with session.put(f"{base}/v1/kv/{key}", json={"type": "counter", "increment": 1}) as r:
                    await r.read()
                async with session.get(f"{base}/v1/kv/{key}") as r:
                    await r.read()
            done += per_session
    load_s = time.perf_counter() - started
    full_started = time.perf_counter()
    found = gc.collect()
    full_ms = (time.perf_counter() - full_started) * 1000
    stop.set()
    await task
    return {"requests": done, "load_s": round(load_s, 1), "cyclic_garbage_left_objects": found,
            "full_collection_ms": round(full_ms, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smaller cache and fewer requests")
    parser.add_argument("--states", type=int, default=None, help="decoded states in the cache (default 300000)")
    parser.add_argument("--requests", type=int, default=None, help="requests in the leftover run (default 10000)")
    parser.add_argument("--turnovers", type=int, default=3, help="times the cache turns over (default 3)")
    parser.add_argument("--churn-child", choices=("cpython", "served"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    states = args.states or (30_000 if args.quick else 300_000)
    big_elements = 100_000 if args.quick else 1_000_000
    if args.churn_child:
        print(json.dumps(churn(args.churn_child, states, args.turnovers, big_elements)))
        return 0
    requests = args.requests or (1000 if args.quick else 10_000)
    out: dict[str, Any] = {"bench": "gc_pause_probe", "states": states, "turnovers": args.turnovers,
                           "quick": args.quick}
    for policy in ("cpython", "served"):
        proc = subprocess.run([sys.executable, __file__, "--churn-child", policy, "--states", str(states),
                               "--turnovers", str(args.turnovers)],
                              capture_output=True, text=True, timeout=600, check=True)
        out[policy] = json.loads(proc.stdout)
    tune_collector()
    out["served_leftover"] = asyncio.run(leftover(requests))
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0
    print(f"cache churn: {states} small decoded states, turned over {args.turnovers} times")
    print(f"{'policy':10} {'gen0':>6} {'gen1':>6} {'gen2':>6} {'max ms gen0':>12} {'gen1':>8} {'gen2':>8} "
          f"{'one full ms':>12}")
    for policy in ("cpython", "served"):
        row = out[policy]
        c, m = row["collections"], row["max_pause_ms"]
        print(f"{policy:10} {c['0']:>6} {c['1']:>6} {c['2']:>6} {m['0']:>12} {m['1']:>8} {m['2']:>8} "
              f"{row['one_full_collection_ms']:>12}")
    left = out["served_leftover"]
    print(f"served node, {left['requests']} requests with connections opened and closed: "
          f"{left['cyclic_garbage_left_objects']} cyclic objects left for a full collection, which took "
          f"{left['full_collection_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
