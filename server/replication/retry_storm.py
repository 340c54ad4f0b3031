"""A retry storm in the replication simulator: clients retry counter increments on other nodes, across partitions,
and every increment must count once cluster-wide (`crdt.counter_ops`). Used by `tests/replication/test_exactly_once.py`
and `bench/apps_bench.py` (`retry_double_applied`).

Each request is one increment of 1 with its own op_id, applied on one node and retried on one to three others (a
client that timed out on the first), while random partitions split the cluster and heal; every node folds its due
op entries as `server.op_folding` does, with a retention longer than any partition. After a final heal every
replica must read, for each key, exactly the number of requests made on it: any excess is a double application,
any shortfall a lost one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rumor.gossip.config import Config
from rumor.server.replication.config import ReplicationConfig
from rumor.server.replication.simulation import ReplicatedSimulation
from rumor.server.updates import FoldOps, Increment


@dataclass(frozen=True)
class StormResult:
    requests: int
    retries: int
    #: after the heal, on the first replica (the others must read the same: `converged`): requests counted twice
    #: or more (their excess), and requests missing
    double_applied: int
    lost: int
    converged: bool
    virtual_s: float


def run_retry_storm(retries: int, *, nodes: int = 5, keys: int = 20, seed: int = 0, requests_per_s: float = 50.0,
                    retention_s: float = 20.0, keep: int = 1000, op_ids: bool = True) -> StormResult:
    """Makes requests until `retries` retries were sent; returns what the replicas count after healing and then
    again after every op entry was folded. Without `op_ids` the same storm retries plain increments (the control:
    they count once per node that applied them)."""
    rng = random.Random(seed)
    cluster = ReplicatedSimulation(nodes, seed=seed, config=ReplicationConfig(sync_interval_s=1.0),
                                   gossip_config=Config.lan())
    cluster.sim.form_cluster()
    expected = dict.fromkeys((f"c{i}" for i in range(keys)), 0)
    sent = requests = 0
    next_fold = 1.0
    while sent < retries:
        up = cluster.nodes
        key = rng.choice(list(expected))
        op_id = f"req-{requests}" if op_ids else None
        requests += 1
        expected[key] += 1
        targets = rng.sample(up, rng.randint(2, min(4, len(up))))  # the first attempt, then the retries
        for node in targets:
            cluster.update(node, key, Increment(amount=1), op_id=op_id)
        sent += len(targets) - 1
        roll = rng.random()
        if roll < 0.02:
            shuffled = list(up)
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(shuffled) - 1)
            cluster.sim.partition(shuffled[:cut], shuffled[cut:])
        elif roll < 0.04:
            cluster.sim.heal()
        cluster.run_for(1.0 / requests_per_s)
        if cluster.sim.clock.now() >= next_fold:
            _fold_everywhere(cluster, retention_s, keep)
            next_fold = cluster.sim.clock.now() + 1.0
    cluster.heal_all()
    converged = cluster.settle(300.0)
    _fold_everywhere(cluster, -1e9, 0)  # converged, every op entry is known everywhere: folding them all is safe
    converged = cluster.settle(300.0) and converged
    counted = [_values(cluster, node.id, expected) for node in cluster.nodes]
    converged = converged and all(values == counted[0] for values in counted)
    double = sum(max(value - expected[key], 0) for key, value in counted[0].items())
    lost = sum(max(expected[key] - value, 0) for key, value in counted[0].items())
    return StormResult(requests, sent, double, lost, converged, cluster.sim.clock.now())


def _fold_everywhere(cluster: ReplicatedSimulation, retention_s: float, keep: int) -> None:
    now_ms = round(cluster.sim.clock.now() * 1000)
    for node in cluster.sim.up_nodes():
        keyspace = cluster.keyspaces[node.id]
        for key in list(keyspace.op_keyed):
            entry = keyspace.entry(key)
            assert entry is not None
            fold = FoldOps(before_ms=now_ms - round(retention_s * 1000), keep=keep)
            if not entry.state.fold_ops(node.id, fold.before_ms, fold.keep, fold.limit).is_bottom():
                cluster.update(node, key, fold)


def _values(cluster: ReplicatedSimulation, node_id: str, expected: dict[str, int]) -> dict[str, int]:
    keyspace = cluster.keyspaces[node_id]
    values = {}
    for key in expected:
        item = keyspace.item(key)
        values[key] = item.value if item is not None else 0
    return values
