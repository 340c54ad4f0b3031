"""Semantics of GCounter and PNCounter (standalone and as embeddable, resettable counters)."""

import pytest

from crdt import GCounter, InvalidOperationError, PNCounter


def test_gcounter_never_loses_a_concurrent_increment() -> None:
    a, b = GCounter(), GCounter()
    a.merge(a.increment("A", 3))
    b.merge(b.increment("B", 4))
    a.merge(a.increment("A"))
    b.merge(a)
    a.merge(b)
    assert a.value() == b.value() == 8
    assert a == b


def test_gcounter_merging_old_state_keeps_the_newer_total() -> None:
    a = GCounter()
    a.merge(a.increment("A", 2))
    old = a.copy()
    a.merge(a.increment("A", 5))
    a.merge(old)
    old.merge(a)
    assert a.value() == old.value() == 7
    assert a._entry_count() == 1


def test_gcounter_rejects_non_positive_amounts() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidOperationError):
            GCounter().increment("A", bad)  # type: ignore[arg-type]


def test_pncounter_up_and_down_with_big_ints() -> None:
    a, b = PNCounter(), PNCounter()
    a.merge(a.increment("A", 10**30))
    b.merge(b.decrement("B", 7))
    b.merge(b.increment("B", -3))
    a.merge(b)
    assert a.value() == 10**30 - 10
    with pytest.raises(InvalidOperationError):
        a.increment("A", 0)


def test_counter_reset_keeps_concurrent_increments_of_other_replicas() -> None:
    a = PNCounter()
    a.merge(a.increment("A", 5))
    b = a.copy()
    a.merge(a.clear())
    b.merge(b.increment("B", 2))
    a.merge(b)
    assert a.value() == 2


def test_pncounter_merge_of_many_replicas_converges() -> None:
    states = []
    for i in range(100):
        c = PNCounter()
        c.merge(c.increment(f"r{i}", i + 1))
        states.append(c)
    total = PNCounter()
    for s in states:
        total.merge(s)
    again = PNCounter()
    for s in reversed(states):
        again.merge(s)
    assert total == again
    assert total.value() == sum(range(1, 101))
