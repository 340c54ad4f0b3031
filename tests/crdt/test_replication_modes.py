"""Delta-state, op-based and full-state replication of one history all converge to the same state.

A scenario (random ops on 2-5 replicas with occasional syncs) is replayed three ways:

* full-state: a sync ``i <- j`` merges a copy of j's whole state (the reference, ``crdt_strategies.replay``);
* delta-state: a sync ships the deltas j knows and i lacks;
* op-based: a sync ships the ops j has delivered through i's ``CausalDelivery``.

The simulated network (a seeded ``random.Random`` drawn by hypothesis) reorders, duplicates and drops what a
sync sends; dropped messages are sent again at a later sync (at-least-once anti-entropy), and a final flush
delivers everything. Every message crosses the wire encoding. At the end every replica in every mode must equal
the full-state join, and during the run a delta/op replica never knows more than its full-state twin.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from crdt_strategies import MODELS, REPLICA_IDS, Env, Replay, registered_type_names, replay, scenarios
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor import crdt
from rumor.crdt import CausalDelivery, Op, OpEmitter

TYPE_NAMES = registered_type_names()


def wire(items: list[Any], rng: random.Random, lossy: bool) -> list[Any]:
    """What arrives of ``items``: shuffled, some duplicated, some dropped. Dropped ones either never arrive
    (``lossy``: the next sync sends them again) or arrive last, after a retransmission timeout."""
    arrivals: list[Any] = []
    late: list[Any] = []
    for item in items:
        roll = rng.random()
        if roll < 0.2:
            late.append(item)
            continue
        arrivals.append(item)
        if roll > 0.85:
            arrivals.append(item)
    rng.shuffle(arrivals)
    return arrivals if lossy else arrivals + late


def via_codec_delta(delta: Any) -> Any:
    return crdt.decode(crdt.encode(delta))


def via_codec_op(op: Op) -> Op:
    return crdt.decode_op(crdt.encode_op(op))


class DeltaCluster:
    """Replicas that ship deltas; each remembers which deltas (by generation index) it has merged."""

    def __init__(self, model: Any, n: int) -> None:
        self.model = model
        self.states = [model.cls() for _ in range(n)]
        self.envs = [Env(REPLICA_IDS[i]) for i in range(n)]
        self.known: list[set[int]] = [set() for _ in range(n)]
        self.deltas: list[Any] = []

    def mutate(self, i: int, op: tuple[Any, ...]) -> None:
        delta = self.model.apply(self.states[i], self.envs[i], op)
        self.states[i].merge(delta)
        self.known[i].add(len(self.deltas))
        self.deltas.append(delta)

    def sync(self, dst: int, src: int, rng: random.Random, lossy: bool) -> None:
        missing = sorted(self.known[src] - self.known[dst])
        for k in wire(missing, rng, lossy):
            self.states[dst].merge(via_codec_delta(self.deltas[k]))
            self.known[dst].add(k)


class OpCluster:
    """Replicas that ship ops; delivery is causal, exactly-once, whatever the network does."""

    def __init__(self, model: Any, n: int) -> None:
        self.model = model
        self.states = [model.cls() for _ in range(n)]
        self.envs = [Env(REPLICA_IDS[i]) for i in range(n)]
        self.deliveries = [CausalDelivery() for _ in range(n)]
        self.emitters = [OpEmitter(REPLICA_IDS[i], self.deliveries[i]) for i in range(n)]
        self.log: list[list[Op]] = [[] for _ in range(n)]  # ops each replica has delivered, in delivery order

    def mutate(self, i: int, op: tuple[Any, ...]) -> None:
        delta = self.model.apply(self.states[i], self.envs[i], op)
        self.states[i].merge(delta)
        self.log[i].append(self.emitters[i].emit(delta))

    def receive(self, dst: int, op: Op) -> None:
        delivery = self.deliveries[dst]
        for released in delivery.receive(via_codec_op(op)):
            # causal order: everything the op depends on was delivered before it
            assert delivery.delivered.get(released.dot.replica) >= released.dot.counter
            for r, n in released.deps.items():
                if r != released.dot.replica:
                    assert delivery.delivered.get(r) >= n
            self.states[dst].merge(released.delta)
            self.log[dst].append(released)

    def sync(self, dst: int, src: int, rng: random.Random, lossy: bool) -> None:
        have = self.deliveries[dst].delivered
        missing = [op for op in self.log[src] if not have.contains(op.dot)]
        for op in wire(missing, rng, lossy):
            self.receive(dst, op)


def run_modes(r: Replay, rng: random.Random, lossy: bool) -> tuple[DeltaCluster, OpCluster]:
    """Replay r's scenario in delta and op mode. Without loss, each sync delivers everything, so after every
    step each replica must equal its full-state twin: checked here, step by step."""
    n = r.scenario.replicas
    model = MODELS[r.scenario.type_name]
    deltas, ops = DeltaCluster(model, n), OpCluster(model, n)
    full = replay(type(r.scenario)(r.scenario.type_name, n, ()))
    for step in r.scenario.steps:
        i = step[1]
        if step[0] == "mut":
            deltas.mutate(i, step[2])
            ops.mutate(i, step[2])
            full.states[i].merge(model.apply(full.states[i], full.envs[i], step[2]))
        elif step[0] == "merge":
            deltas.sync(i, step[2], rng, lossy)
            ops.sync(i, step[2], rng, lossy)
            full.states[i].merge(full.states[step[2]].copy())
        else:
            deltas.envs[i].snapshot = deltas.states[i].context()
            ops.envs[i].snapshot = ops.states[i].context()
            full.envs[i].snapshot = full.states[i].context()
        if not lossy:
            assert deltas.states == full.states
            assert ops.states == full.states
    return deltas, ops


def flush(cluster: DeltaCluster | OpCluster, rng: random.Random) -> None:
    """Anti-entropy until quiescent: one lossy round of all pairs in random order, then rounds where whatever
    is dropped is retransmitted, until every replica has everything (bounded: it must get there)."""
    n = len(cluster.states)
    for round_ in range(2 * n + 2):
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        rng.shuffle(pairs)
        for i, j in pairs:
            cluster.sync(i, j, rng, lossy=round_ == 0)
        have = cluster.known if isinstance(cluster, DeltaCluster) else [{op.dot for op in lg} for lg in cluster.log]
        if all(h == set().union(*have) for h in have):
            return
    raise AssertionError(f"anti-entropy did not quiesce in {2 * n + 2} rounds")


def made(cluster: DeltaCluster | OpCluster) -> Any:
    """The join of every delta the cluster generated: what it must converge to."""
    acc = cluster.model.cls()
    deltas = cluster.deltas if isinstance(cluster, DeltaCluster) else [op.delta for log in cluster.log for op in log]
    for d in deltas:
        acc.merge(d)
    return acc


def assert_converged(cluster: DeltaCluster | OpCluster, target: Any) -> None:
    for s in cluster.states:
        assert s == target
        assert s.value() == target.value()
        assert crdt.encode(s) == crdt.encode(target)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=40)
@given(data=st.data())
def test_delta_op_and_full_state_replication_agree_step_by_step(type_name: str, data: st.DataObject) -> None:
    """Reordered, duplicated and dropped-then-redelivered messages: all three modes hold equal states after
    every step and converge to the full-state join."""
    r = replay(data.draw(scenarios(type_name)))
    rng = random.Random(data.draw(st.integers(0, 2**32), label="network seed"))
    deltas, ops = run_modes(r, rng, lossy=False)
    flush(deltas, rng)
    flush(ops, rng)
    target = r.joined()
    assert_converged(deltas, target)
    assert_converged(ops, target)
    assert all(d.pending_count == 0 for d in ops.deliveries)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=30)
@given(data=st.data())
def test_lossy_network_converges_to_the_join_of_everything_made(type_name: str, data: st.DataObject) -> None:
    """Messages lost for good within a sync are resent by later syncs: replicas act on partial knowledge (so
    the history differs from the full-state run), but every replica ends equal to the join of all it made."""
    r = replay(data.draw(scenarios(type_name)))
    rng = random.Random(data.draw(st.integers(0, 2**32), label="network seed"))
    deltas, ops = run_modes(r, rng, lossy=True)
    flush(deltas, rng)
    flush(ops, rng)
    assert_converged(deltas, made(deltas))
    assert_converged(ops, made(ops))


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=20)
@given(data=st.data())
def test_duplicate_and_early_ops_are_buffered_not_applied(type_name: str, data: st.DataObject) -> None:
    """An op whose predecessor is missing waits; a duplicate is ignored; the buffer is bounded."""
    scenario = data.draw(scenarios(type_name, min_replicas=2))
    ops = OpCluster(MODELS[type_name], 2)
    for step in scenario.steps:
        if step[0] == "mut":
            ops.mutate(0, step[2])
    made = ops.log[0]
    if len(made) < 2:
        return
    receiver = CausalDelivery(max_pending=len(made) - 1)
    assert receiver.receive(made[-1]) == []  # predecessors missing
    assert receiver.pending_count == 1
    assert receiver.receive(made[-1]) == []  # duplicate of a buffered op
    assert receiver.pending_count == 1
    for op in made[1:-1]:
        receiver.receive(op)
    assert receiver.pending_count == len(made) - 1
    released = receiver.receive(made[0])
    assert [op.dot for op in released] == [op.dot for op in made]
    assert receiver.pending_count == 0
    assert receiver.receive(made[0]) == []  # a seen dot is ignored
    # a buffer of capacity k refuses the (k+1)th early op
    tight = CausalDelivery(max_pending=1)
    tight.receive(made[-1])
    if len(made) >= 3:
        with pytest.raises(crdt.BufferFullError):
            tight.receive(made[-2])
