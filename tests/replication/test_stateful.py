"""Stateful property test: mutate / partition / heal / crash / restart / step in any order; once healed and settled,
every replica holds the same bytes and the values the sequential model computes. GC runs throughout (short grace),
so it is also checked never to lose anything a live member needs."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from sim_workload import Workload

from rumor.gossip.config import Config
from rumor.gossip.simulation import SimNode
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.simulation import ReplicatedSimulation

N = 4


class ClusterMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1))
    def build(self, seed: int) -> None:
        self.seed = seed
        self.cluster = ReplicatedSimulation(N, seed=seed, config=ReplicationConfig(sync_interval_s=1.0,
                                                                                   gc_grace_s=2.0),
                                            gossip_config=Config.lan())
        self.cluster.sim.form_cluster()
        faults = self.cluster.sim.faults
        faults.drop_rate, faults.duplicate_rate, faults.latency_s = 0.2, 0.05, (0.001, 0.05)
        self.workload = Workload(self.cluster, random.Random(seed))
        self.crashed: list[SimNode] = []

    @rule(index=st.integers(0, N - 1), count=st.integers(1, 5))
    def mutate(self, index: int, count: int) -> None:
        node = self.cluster.nodes[index]
        if node in self.crashed:
            return
        for _ in range(count):
            self.workload.random_update(node)

    @rule(cut=st.integers(1, N - 1))
    def partition(self, cut: int) -> None:
        self.cluster.sim.partition(self.cluster.nodes[:cut], self.cluster.nodes[cut:])

    @rule()
    def heal(self) -> None:
        self.cluster.sim.heal()

    @rule(index=st.integers(1, N - 1))
    def crash(self, index: int) -> None:
        node = self.cluster.nodes[index]
        if node not in self.crashed and len(self.crashed) < N - 2:
            self.cluster.sim.crash(node)
            self.crashed.append(node)

    @rule()
    def restart(self) -> None:
        if self.crashed:
            node = self.crashed.pop(0)
            self.cluster.sim.restart(node, [n for n in self.cluster.sim.up_nodes() if n is not node][:1])

    @rule(seconds=st.floats(0.1, 15.0))
    def step(self, seconds: float) -> None:
        self.cluster.run_for(seconds)

    def teardown(self) -> None:
        if not hasattr(self, "cluster"):
            return
        cluster = self.cluster
        for node in self.crashed:
            cluster.sim.restart(node, [n for n in cluster.sim.up_nodes() if n is not node][:1])
        cluster.heal_all()
        assert cluster.settle(180.0), f"no convergence, seed={self.seed} ({cluster.describe()})"
        for node in cluster.nodes:
            self.workload.check(node)


ClusterMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=20, deadline=None)
TestCluster = ClusterMachine.TestCase
