"""Membership-driven GC in a running cluster: a departed member's metadata is compacted, its data never is."""

from __future__ import annotations

from rumor.gossip.config import Config
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.simulation import ReplicatedSimulation
from rumor.server.updates import Increment, SetChange


def test_departed_member_metadata_is_compacted_but_its_writes_survive_everywhere() -> None:
    cluster = ReplicatedSimulation(4, seed=11, config=ReplicationConfig(sync_interval_s=1.0, gc_grace_s=3.0),
                                   gossip_config=Config.lan())
    sim = cluster.sim
    sim.form_cluster()
    a, b, c, d = cluster.nodes
    sim.partition([a, b, d], [c])  # c misses everything d does
    for i in range(20):
        cluster.update(d, "visits", Increment(amount=1))
        cluster.update(d, "tags", SetChange(add=(f"t{i}",)))
        cluster.run_for(0.1)
    cluster.run_for(2.0)
    origin = cluster.core(d).origin
    assert origin in cluster.core(a).coverage.origins()
    sim.crash(d)
    cluster.run_for(1.0)
    # While c is still a live member that has not acknowledged d's groups, a keeps d's metadata.
    if "node-002" in {m.id for m in a.membership.alive_members()}:
        assert "node-002" in cluster.core(a).coverage.blockers(origin, {m.id for m in a.membership.alive_members()})
        assert origin in cluster.core(a).coverage.origins()
    sim.heal()
    assert sim.run_until_true(lambda: sim.converged([a, b, c]) and cluster.converged([a, b, c]), 120.0), \
        cluster.describe()
    # GC happens once every live member acknowledged (c included, after its anti-entropy catch-up).
    assert sim.run_until_true(lambda: all(origin not in cluster.core(n).coverage.origins() for n in (a, b, c)),
                              120.0), cluster.describe()
    for node in (a, b, c):
        item = cluster.keyspaces[node.id].item("visits")
        assert item is not None and item.value == 20
        tags = cluster.keyspaces[node.id].item("tags")
        assert tags is not None and len(tags.value) == 20
        assert cluster.core(node).coverage.collected >= 1
    assert cluster.converged([a, b, c])
