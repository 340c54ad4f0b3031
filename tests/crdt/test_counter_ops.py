"""Op-keyed counter increments (``crdt.counter_ops``): a request retried on any replicas counts once, folds keep the
value and shrink the state, and the wire refuses malformed op rows. The laws (``test_laws``) cover these ops too:
``crdt_strategies`` draws them for the top-level counters."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumor.crdt import DecodeError, GCounter, PNCounter, decode, encode
from rumor.crdt.errors import InvalidOperationError

COUNTERS = [GCounter, PNCounter]
REPLICAS = ["r0", "r1", "r2", "r3"]


def _history(seed: int, cls: type, ops: int) -> tuple[list[Any], int]:
    """Replicas applying requests (some retried on other replicas, as a client that timed out would) with merges
    between; returns the states and the value the requests add up to, each request once."""
    rng = random.Random(seed)
    states = [cls() for _ in REPLICAS]
    expected = 0
    for n in range(ops):
        amount = rng.randint(1, 5)
        expected += amount
        for i in rng.sample(range(len(states)), rng.randint(1, len(states))):  # the first attempt and its retries
            states[i].merge(states[i].increment_op(REPLICAS[i], f"op-{n}", amount, at_ms=n))
        if rng.random() < 0.5:
            i, j = rng.sample(range(len(states)), 2)
            states[i].merge(states[j].copy())
    return states, expected


def _joined(states: list[Any]) -> Any:
    acc = type(states[0])()
    for s in states:
        acc.merge(s.copy())
    return acc


@pytest.mark.parametrize("cls", COUNTERS)
@given(seed=st.integers(0, 2**32), ops=st.integers(1, 30))
def test_a_request_applied_on_several_replicas_counts_once(cls: type, seed: int, ops: int) -> None:
    states, expected = _history(seed, cls, ops)
    assert _joined(states).value() == expected
    for s in states:  # and every replica, once it has heard from the others
        s.merge(_joined(states))
        assert s.value() == expected


@pytest.mark.parametrize("cls", COUNTERS)
@given(seed=st.integers(0, 2**32), ops=st.integers(1, 30), keep=st.integers(0, 10))
def test_folds_after_convergence_keep_the_value_and_drop_the_op_entries(cls: type, seed: int, ops: int,
                                                                        keep: int) -> None:
    states, expected = _history(seed, cls, ops)
    everything = _joined(states)
    for s in states:
        s.merge(everything.copy())
    folds = [s.fold_ops(r, before_ms=ops // 2, keep=keep, limit=ops) for s, r in zip(states, REPLICAS, strict=True)]
    for s in states:
        for fold in folds:
            s.merge(fold.copy())
        assert s.value() == expected
    remaining = sum(1 for key in states[0]._keys if type(key) is tuple)
    assert remaining == min(keep, ops - ops // 2)  # the old ones all folded, and no more than `keep` kept
    assert all(s == states[0] for s in states)


@pytest.mark.parametrize("cls", COUNTERS)
@given(seed=st.integers(0, 2**32), ops=st.integers(1, 20), folder=st.integers(0, 3))
def test_a_fold_never_changes_the_value_of_the_state_it_was_made_from(cls: type, seed: int, ops: int,
                                                                      folder: int) -> None:
    states, _ = _history(seed, cls, ops)
    s = states[folder]
    before = s.value()
    s.merge(s.fold_ops(REPLICAS[folder], before_ms=ops, keep=0, limit=ops))
    assert s.value() == before
    assert decode(encode(s)) == s


@pytest.mark.parametrize("cls", COUNTERS)
def test_a_retry_after_its_op_arrived_makes_no_delta(cls: type) -> None:
    a, b = cls(), cls()
    a.merge(a.increment_op("a", "req-1", 4, at_ms=10))
    b.merge(a.copy())
    assert b.increment_op("b", "req-1", 4, at_ms=20).is_bottom()
    assert b.value() == 4


def test_a_retry_across_a_partition_then_heal_counts_once_and_plain_increments_still_add() -> None:
    a, b = PNCounter(), PNCounter()
    a.merge(a.increment_op("a", "req-1", -3, at_ms=10))  # the client timed out on a ...
    b.merge(b.increment_op("b", "req-1", -3, at_ms=11))  # ... and retried on b, across the partition
    b.merge(b.increment("b", 10))
    a.merge(b.copy())
    b.merge(a.copy())
    assert a == b and a.value() == b.value() == 7


def test_exactly_one_replica_folds_a_key_both_applied() -> None:
    a, b = GCounter(), GCounter()
    a.merge(a.increment_op("a", "req-1", 5, at_ms=1))
    b.merge(b.increment_op("b", "req-1", 5, at_ms=2))
    a.merge(b.copy())
    b.merge(a.copy())
    assert not a.fold_ops("a", before_ms=100, keep=0).is_bottom()  # "a" owns the smallest dot
    assert b.fold_ops("b", before_ms=100, keep=0).is_bottom()


def test_the_documented_limit_a_partition_longer_than_the_retention_counts_twice() -> None:
    """Each side folds the entry it alone knows: after the heal the request counts twice. This is the limit the
    README states (retention), pinned so that a change to it is a decision, not an accident."""
    a, b = GCounter(), GCounter()
    a.merge(a.increment_op("a", "req-1", 5, at_ms=1))
    b.merge(b.increment_op("b", "req-1", 5, at_ms=2))
    a.merge(a.fold_ops("a", before_ms=100, keep=0))
    b.merge(b.fold_ops("b", before_ms=100, keep=0))
    a.merge(b)
    assert a.value() == 10


def test_ops_within_the_count_and_age_are_not_folded() -> None:
    g = GCounter()
    for n in range(5):
        g.merge(g.increment_op("a", f"op-{n}", 1, at_ms=100 + n))
    assert g.fold_ops("a", before_ms=100, keep=5).is_bottom()
    g.merge(g.fold_ops("a", before_ms=102, keep=5))  # age: op-0 and op-1
    assert sorted(k[0] for k in g._keys if type(k) is tuple) == ["op-2", "op-3", "op-4"]
    g.merge(g.fold_ops("a", before_ms=0, keep=1))  # count: all but the newest
    assert [k for k in g._keys if type(k) is tuple] == [("op-4",)] and g.value() == 5


@pytest.mark.parametrize("op_id", ["", "x" * 257, 7, None])
def test_bad_op_ids_are_refused(op_id: Any) -> None:
    with pytest.raises(InvalidOperationError):
        GCounter().increment_op("a", op_id, 1, at_ms=0)


def test_bad_amounts_and_times_are_refused() -> None:
    with pytest.raises(InvalidOperationError):
        GCounter().increment_op("a", "x", -1, at_ms=0)
    with pytest.raises(InvalidOperationError):
        PNCounter().increment_op("a", "x", 0, at_ms=0)
    with pytest.raises(InvalidOperationError):
        PNCounter().increment_op("a", "x", 1, at_ms=-5)


def _body(state: Any) -> list[Any]:
    blob = encode(state)
    assert blob[:2] == b"\xc1\x02"
    return msgpack.unpackb(blob[3:], strict_map_key=False, use_list=True)


def _framed(body: list[Any]) -> bytes:
    return b"\xc1\x02\x00" + msgpack.packb(body, use_bin_type=True)


def _two_ops() -> PNCounter:
    p = PNCounter()
    p.merge(p.increment("a", 2))
    p.merge(p.increment_op("a", "x", 3, at_ms=7))
    p.merge(p.increment_op("b", "y", -1, at_ms=8))
    return p


def test_op_rows_round_trip_and_a_plain_counter_keeps_its_bytes() -> None:
    p = _two_ops()
    body = _body(p)
    assert len(body) == 9 and [row[1:] for row in body[8]] == [["x", 7], ["y", 8]]
    assert decode(_framed(body)) == p
    plain = PNCounter()
    plain.merge(plain.increment("a", 2))
    assert len(_body(plain)) == 8  # no op rows, no ninth element: earlier bytes unchanged


@pytest.mark.parametrize("mangle", [
    lambda rows: [],  # present but empty
    lambda rows: [rows[1], rows[0]],  # positions not ascending
    lambda rows: [[rows[0][0], rows[0][1], -1], rows[1]],  # negative time
    lambda rows: [[rows[0][0], "", rows[0][2]], rows[1]],  # empty op_id
    lambda rows: [rows[0], [99, "y", 8]],  # position past the entries
    lambda rows: [rows[0], [rows[1][0], 5, 8]],  # op_id not a string
    lambda rows: "rows",
])
def test_malformed_op_rows_are_refused(mangle: Any) -> None:
    body = _body(_two_ops())
    body[8] = mangle(body[8])
    with pytest.raises(DecodeError):
        decode(_framed(body))


def test_op_rows_on_a_type_without_them_are_refused() -> None:
    from rumor.crdt import ORSet

    s = ORSet()
    s.merge(s.add("a", "e"))
    body = _body(s)
    body.append([[0, "x", 1]])
    with pytest.raises(DecodeError):
        decode(_framed(body))
