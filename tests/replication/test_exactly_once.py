"""Retries that are safe on any node: a counter increment that carries an op_id counts once cluster-wide, even when
its retry lands on the other side of a partition (`crdt.counter_ops`, `server.op_folding`). In virtual time."""

from __future__ import annotations

from rumor.gossip.config import Config
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.retry_storm import run_retry_storm
from rumor.server.replication.simulation import ReplicatedSimulation
from rumor.server.updates import FoldOps, Increment


def _cluster(n: int, seed: int) -> ReplicatedSimulation:
    cluster = ReplicatedSimulation(n, seed=seed, config=ReplicationConfig(sync_interval_s=1.0),
                                   gossip_config=Config.lan())
    cluster.sim.form_cluster()
    return cluster


def _value(cluster: ReplicatedSimulation, node_index: int, key: str) -> int:
    item = cluster.keyspaces[cluster.nodes[node_index].id].item(key)
    return 0 if item is None else item.value


def test_a_retry_across_a_partition_is_applied_once_after_the_heal() -> None:
    cluster = _cluster(3, seed=7)
    a, b, c = cluster.nodes
    cluster.sim.partition([a], [b, c])
    cluster.update(a, "hits", Increment(amount=5), op_id="req-1")  # the client times out on a ...
    cluster.run_for(2.0)
    cluster.update(b, "hits", Increment(amount=5), op_id="req-1")  # ... and retries on b, which never heard of it
    cluster.update(c, "hits", Increment(amount=1))  # a plain increment meanwhile
    cluster.run_for(2.0)
    assert _value(cluster, 0, "hits") == 5 and _value(cluster, 1, "hits") == 6
    cluster.heal_all()
    assert cluster.settle(120.0), cluster.describe()
    assert [_value(cluster, i, "hits") for i in range(3)] == [6, 6, 6]
    # and once the op entries fold into plain counts (after the heal, so every entry is known everywhere)
    now_ms = round(cluster.sim.clock.now() * 1000)
    for node in cluster.nodes:
        state = cluster.keyspaces[node.id].entry("hits").state  # type: ignore[union-attr]
        if not state.fold_ops(node.id, now_ms + 1, 0).is_bottom():
            cluster.update(node, "hits", FoldOps(before_ms=now_ms + 1, keep=0))
    assert cluster.settle(120.0), cluster.describe()
    assert [_value(cluster, i, "hits") for i in range(3)] == [6, 6, 6]
    assert not cluster.keyspaces[a.id].entry("hits").state.has_ops()  # type: ignore[union-attr]


def test_a_retry_after_the_first_attempt_arrived_changes_nothing() -> None:
    cluster = _cluster(2, seed=3)
    a, b = cluster.nodes
    cluster.update(a, "hits", Increment(amount=2), op_id="req-1")
    assert cluster.settle(60.0)
    before = cluster.states(b)
    cluster.update(b, "hits", Increment(amount=2), op_id="req-1")
    assert _value(cluster, 1, "hits") == 2
    assert cluster.settle(60.0) and cluster.states(a) == cluster.states(b)
    assert cluster.states(b) == before


def test_a_retry_storm_across_partitions_applies_every_request_once() -> None:
    result = run_retry_storm(600, seed=11, retention_s=30.0)
    assert result.converged
    assert (result.double_applied, result.lost) == (0, 0)
    assert result.retries >= 600


def test_the_same_storm_without_op_ids_counts_every_retry() -> None:
    """The control: the storm is able to catch double application (plain increments count once per node)."""
    result = run_retry_storm(200, seed=11, op_ids=False)
    assert result.converged and result.lost == 0
    assert result.double_applied == result.retries
