"""Causal delivery: exactly-once, causally ordered op effects from duplicated, reordered delivery."""

import random

import pytest

from rumor.crdt import BufferFullError, CausalDelivery, CausalGapError, OpEmitter, ORSet, decode_op, encode_op
from rumor.crdt.causal_delivery import Op


def make_ops() -> list[Op]:
    """A writes twice, B (having seen A's ops) writes once: B's op depends on both of A's."""
    a_state, b_state = ORSet(), ORSet()
    a_log, b_log = CausalDelivery(), CausalDelivery()
    a_emit, b_emit = OpEmitter("A", a_log), OpEmitter("B", b_log)
    ops = []
    for element in ("x", "y"):
        delta = a_state.add("A", element)
        a_state.merge(delta)
        ops.append(a_emit.emit(delta))
    for op in ops:
        for ready in b_log.receive(op):
            b_state.merge(ready.delta)
    delta = b_state.remove("x")
    b_state.merge(delta)
    ops.append(b_emit.emit(delta))
    return ops


def test_ops_are_released_exactly_when_predecessors_arrive() -> None:
    a1, a2, b1 = make_ops()
    d = CausalDelivery()
    assert d.receive(b1) == []
    assert d.receive(a2) == []
    assert d.pending_count == 2
    assert d.receive(a1) == [a1, a2, b1]
    assert d.pending_count == 0
    assert d.receive(a2) == [] and d.receive(b1) == []  # duplicates ignored


def test_shuffled_duplicated_delivery_converges_to_the_same_state() -> None:
    ops = make_ops()
    for seed in range(20):
        rng = random.Random(seed)
        stream = [encode_op(op) for op in ops for _ in range(rng.randint(1, 3))]
        rng.shuffle(stream)
        d, state = CausalDelivery(), ORSet()
        applied = []
        for raw in stream:
            for ready in d.receive(decode_op(raw)):
                state.merge(ready.delta)
                applied.append(ready.dot)
        assert applied == [op.dot for op in ops], f"seed={seed}"
        assert state.value() == frozenset({"y"}), f"seed={seed}"


def test_buffer_is_bounded() -> None:
    _, a2, b1 = make_ops()
    d = CausalDelivery(max_pending=1)
    d.receive(a2)
    with pytest.raises(BufferFullError):
        d.receive(b1)


def test_record_local_rejects_gaps() -> None:
    a1, a2, _ = make_ops()
    d = CausalDelivery()
    with pytest.raises(CausalGapError) as info:
        d.record_local(a2)
    assert (info.value.replica, info.value.expected, info.value.got) == ("A", 1, 2)
    d.record_local(a1)
    assert d.delivered.get("A") == 1
