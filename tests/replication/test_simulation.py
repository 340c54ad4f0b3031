"""Whole clusters in virtual time: random updates of every type under loss, duplication, reordering, delay,
crashes with restarts and partitions; after healing, every replica holds the same bytes and the model's values."""

from __future__ import annotations

import random

import pytest
from sim_workload import Workload

from rumor.gossip.config import Config
from rumor.gossip.sim_network import FaultPlan
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.simulation import ReplicatedSimulation


def run_chaos(n: int, seed: int, duration_s: float = 30.0, writes_per_s: float = 10.0,
              settle_s: float = 120.0) -> ReplicatedSimulation:
    rng = random.Random(seed)
    faults = FaultPlan(drop_rate=0.2, duplicate_rate=0.05, latency_s=(0.001, 0.08))
    cluster = ReplicatedSimulation(n, seed=seed, config=ReplicationConfig(sync_interval_s=1.0),
                                   gossip_config=Config.lan(), faults=FaultPlan())
    cluster.sim.form_cluster()
    cluster.sim.network.faults.drop_rate = faults.drop_rate
    cluster.sim.network.faults.duplicate_rate = faults.duplicate_rate
    cluster.sim.network.faults.latency_s = faults.latency_s
    workload = Workload(cluster, rng)
    crashed: list = []
    steps = int(duration_s * writes_per_s)
    for _ in range(steps):
        up = cluster.sim.up_nodes()
        workload.random_update(rng.choice(up))
        roll = rng.random()
        if roll < 0.01 and len(crashed) < max(1, n // 5):
            victim = rng.choice([x for x in up if x is not cluster.nodes[0]])
            cluster.sim.crash(victim)
            crashed.append(victim)
        elif roll < 0.02 and crashed:
            node = crashed.pop(0)
            cluster.sim.restart(node, [x for x in cluster.sim.up_nodes() if x is not node][:2])
        elif roll < 0.025:
            shuffled = list(cluster.nodes)
            rng.shuffle(shuffled)
            cluster.sim.partition(shuffled[: n // 2], shuffled[n // 2 :])
        elif roll < 0.035:
            cluster.sim.heal()
        cluster.run_for(1.0 / writes_per_s)
    for node in crashed:
        cluster.sim.restart(node, [x for x in cluster.sim.up_nodes() if x is not node][:2])
    cluster.heal_all()
    assert cluster.settle(settle_s), f"did not converge ({cluster.describe()})"
    for node in cluster.sim.up_nodes():
        workload.check(node)
    assert len(cluster.sim.up_nodes()) == n
    return cluster


@pytest.mark.parametrize("seed", [1, 2])
def test_five_nodes_converge_to_the_model_under_faults(seed: int) -> None:
    run_chaos(5, seed)


def test_twenty_nodes_converge_to_the_model_under_faults() -> None:
    run_chaos(20, 3, duration_s=20.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 5])
def test_fifty_nodes_converge_to_the_model_under_faults(seed: int) -> None:
    run_chaos(50, seed, duration_s=30.0, settle_s=300.0)
