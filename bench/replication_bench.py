"""Replication figures: epidemic spread, anti-entropy bytes (idle, d differences, big values) and catch-up time.

    python bench/replication_bench.py            # human table
    python bench/replication_bench.py --json     # one JSON object
    python bench/replication_bench.py --quick    # smaller sizes (for a smoke run), flagged in the output

Baselines measured in the same run: the full-state transfer size (what a naive sync would send) for the byte ratios,
and the epidemic model's expectation (~7 rounds for 99.9% at N=50, fanout 3) for the spread.
Every loop is bounded in count or time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rumor.crdt import ORSet, PNCounter
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.memberlist import Memberlist
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.config import ServerConfig
from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.node import Node
from rumor.server.replication import KeyspaceStore, ReplicaCore, ReplicationConfig
from rumor.server.replication.replica import sync_pair
from rumor.server.replication.runtime import GossipReplication
from rumor.server.updates import Increment


def core(node_id: str, config: ReplicationConfig | None = None, seed: int = 0) -> ReplicaCore:
    keyspace = Keyspace(node_id, HLCSource(lambda: 1_000))
    replica = ReplicaCore(node_id, KeyspaceStore(keyspace), config or ReplicationConfig(sync_interval_s=1e9),
                          random.Random(seed), 0.0, epoch=1)
    keyspace.subscribe(replica.on_local)
    return replica


def keyspace_of(replica: ReplicaCore) -> Keyspace:
    store = replica.store
    assert isinstance(store, KeyspaceStore)
    return store.keyspace


# -- spread -----------------------------------------------------------------------------------------------------------


def rounds_to_all(n: int, seed: int, max_rounds: int = 60) -> int:
    """One update on one node; each round every node runs one push tick; messages arrive before the next round."""
    rng = random.Random(seed)
    cores = [core(f"n{i:03d}", ReplicationConfig(sync_interval_s=1e9), seed=rng.getrandbits(32)) for i in range(n)]
    ids = [c.node_id for c in cores]
    by_id = {c.node_id: c for c in cores}
    keyspace_of(cores[rng.randrange(n)]).apply_local("k", Increment(amount=1))
    interval = cores[0].config.push_interval_s
    for r in range(1, max_rounds + 1):
        now = r * interval
        inflight = []
        for c in cores:
            inflight.extend((c.node_id, target, payload) for target, payload in c.tick(now, ids).pushes)
        for sender, target, payload in inflight:
            by_id[target].handle_message(payload, sender, now)
        if all("k" in keyspace_of(c) for c in cores):
            return r
    return max_rounds + 1


def spread(n: int, trials: int) -> dict[str, float]:
    results = sorted(rounds_to_all(n, seed) for seed in range(trials))
    p99 = results[min(len(results) - 1, int(0.99 * len(results)))]
    return {"p50": statistics.median(results), "p99": p99, "max": results[-1]}


# -- anti-entropy bytes -----------------------------------------------------------------------------------------------


def loaded_pair(n_keys: int) -> tuple[ReplicaCore, ReplicaCore]:
    a, b = core("a", seed=1), core("b", seed=2)
    ka, kb = keyspace_of(a), keyspace_of(b)
    for i in range(n_keys):
        state = PNCounter().increment(f"w{i % 7}", i + 1)
        ka.merge_remote(f"key:{i:07d}", "counter", state)
        kb.merge_remote(f"key:{i:07d}", "counter", state.copy())
    a.digests.mark_all(ka)
    b.digests.mark_all(kb)
    a.digests.flush(10**9)
    b.digests.flush(10**9)
    return a, b


def sync_bytes(a: ReplicaCore, b: ReplicaCore, now: float) -> tuple[int, int, bool]:
    sizes: list[int] = []
    session = sync_pair(a, b, now, observe=lambda m: sizes.append(len(m)))
    return sum(sizes), max(sizes), bool(session.outcome and session.outcome.complete)


def anti_entropy_figures(n_keys: int, diff: int) -> dict[str, Any]:
    """Idle cost, then ``diff`` keys changed on ``a`` repaired twice: once with the stale side initiating (the newer
    side responds), once with the newer side initiating. Sessions start from either side at random in a cluster,
    so the headline ratio is the worse of the two."""
    a, b = loaded_pair(n_keys)
    idle, _, idle_ok = sync_bytes(a, b, 1.0)
    keys = list(keyspace_of(a))
    rng = random.Random(3)
    out: dict[str, Any] = {"idle_sync_bytes": idle, "idle_complete": idle_ok}
    for now, (initiator, responder), case in ((2.0, (b, a), "responder_newer"), (3.0, (a, b), "initiator_newer")):
        changed = rng.sample(keys, diff)
        for key in changed:
            keyspace_of(a).apply_local(key, Increment(amount=3))
        a.digests.flush(10**9)
        diff_state = sum(len(a.encode_key(k) or b"") for k in changed)
        repair, _, repair_ok = sync_bytes(initiator, responder, now)
        out.update({f"repair_bytes_{case}": repair, f"repair_complete_{case}": repair_ok,
                    f"diff_state_bytes_{case}": diff_state, f"sync_bytes_over_diff_bytes_{case}": repair / diff_state})
    full_state = sum(len(a.encode_key(k) or b"") for k in keys)
    worst = max(("responder_newer", "initiator_newer"), key=lambda c: out[f"sync_bytes_over_diff_bytes_{c}"])
    out.update({"full_state_bytes": full_state, "repair_bytes": out[f"repair_bytes_{worst}"],
                "repair_complete": out["repair_complete_responder_newer"] and out["repair_complete_initiator_newer"],
                "sync_bytes_over_diff_bytes": out[f"sync_bytes_over_diff_bytes_{worst}"],
                "sync_bytes_over_full_state": out[f"repair_bytes_{worst}"] / full_state})
    return out


def big_set_figures(elements: int, limit: int) -> dict[str, Any]:
    config = ReplicationConfig(sync_interval_s=1e9, sync_message_bytes=limit)
    a, b = core("a", config, 1), core("b", config, 2)
    big = ORSet()
    big.merge(big.add_all("a", range(elements)))
    keyspace_of(a).merge_remote("big", "set", big)
    a.on_changed("big")
    started = time.perf_counter()
    total, largest, ok = sync_bytes(b, a, 1.0)
    return {"max_message_bytes": largest, "big_set_elements": elements, "big_set_sync_bytes": total,
            "big_set_sync_s": time.perf_counter() - started, "big_set_complete": ok,
            "message_limit_bytes": limit}


# -- catch-up on loopback ---------------------------------------------------------------------------------------------


async def catch_up(n_keys: int, timeout_s: float) -> dict[str, Any]:
    gossip = Config.local()

    def make(delegate: Delegate, node_id: str) -> Memberlist:
        transport = AsyncioTransport(("127.0.0.1", 0), None, gossip.max_packet_bytes, gossip.max_stream_bytes)
        return Memberlist(gossip, node_id, transport, delegate=delegate)

    nodes: list[Node] = []
    seeds: tuple = ()
    try:
        for i in range(3):
            node = Node(ServerConfig(in_memory=True, node_id=f"old{i}"),
                        replication=GossipReplication(ReplicationConfig(seeds=seeds, sync_interval_s=0.5), make))
            await node.start()
            nodes.append(node)
            if not seeds:
                seeds = (node.replication.memberlist.transport.local_address,)  # type: ignore[attr-defined]
        for i in range(n_keys):
            state = PNCounter().increment("old0", i + 1)
            for node in nodes:
                node.keyspace.merge_remote(f"key:{i:07d}", "counter", state.copy())
        for node in nodes:
            replica = node.replication.core  # type: ignore[attr-defined]
            replica.digests.mark_all(node.keyspace)
            replica.digests.flush(10**9)
        fresh = Node(ServerConfig(in_memory=True, node_id="fresh"),
                     replication=GossipReplication(ReplicationConfig(seeds=seeds, sync_interval_s=0.5), make))
        started = time.perf_counter()
        await fresh.start()
        nodes.append(fresh)
        deadline = started + timeout_s
        while len(fresh.keyspace) < n_keys and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        return {"catch_up_s_100k_keys": elapsed if len(fresh.keyspace) >= n_keys else None,
                "catch_up_keys": len(fresh.keyspace), "catch_up_target_keys": n_keys}
    finally:
        for node in reversed(nodes):
            await node.stop()


# -- main -----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    args = parser.parse_args()
    quick = args.quick
    out: dict[str, Any] = {"quick": quick}
    s50 = spread(50, 50 if quick else 200)
    s200 = spread(200, 10 if quick else 40)
    out.update({"rounds_to_all_p50": s50["p50"], "rounds_to_all_p99": s50["p99"], "rounds_to_all_max": s50["max"],
                "rounds_to_all_p50_n200": s200["p50"], "rounds_to_all_p99_n200": s200["p99"],
                "rounds_to_all_max_n200": s200["max"]})
    out.update(anti_entropy_figures(10_000 if quick else 100_000, 100))
    out.update(big_set_figures(100_000 if quick else 1_000_000, 64 * 1024))
    out.update(asyncio.run(catch_up(10_000 if quick else 100_000, 300.0)))
    targets = {
        "rounds_to_all_p99 <= 10": out["rounds_to_all_p99"] <= 10,
        "rounds_to_all_p99_n200 <= 10": out["rounds_to_all_p99_n200"] <= 10,
        "idle_sync_bytes < 2048": out["idle_sync_bytes"] < 2048,
        "sync_bytes_over_diff_bytes < 3": out["sync_bytes_over_diff_bytes"] < 3,
        "sync_bytes_over_full_state < 0.01": out["sync_bytes_over_full_state"] < 0.01,
        "max_message_bytes <= limit": out["max_message_bytes"] <= out["message_limit_bytes"],
        "catch_up completed": out["catch_up_s_100k_keys"] is not None,
    }
    out["targets_met"] = {name: bool(ok) for name, ok in targets.items()}
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return
    width = max(len(k) for k in out)
    for key, value in out.items():
        if key != "targets_met":
            print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for name, ok in targets.items():
        print(f"{'MET    ' if ok else 'NOT MET'}  {name}")


if __name__ == "__main__":
    main()
