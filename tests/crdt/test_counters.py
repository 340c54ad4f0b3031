"""Semantics of GCounter and PNCounter (standalone and as embeddable, resettable counters)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.crdt import GCounter, InvalidOperationError, PNCounter


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


def _increment_deltas(replicas: int, amounts: list[int]) -> list[tuple[str, PNCounter, int]]:
    """Each replica in turn applies the next amount to its own state; returns every delta made, in order, with its
    replica and that replica's running total once it is applied."""
    states = {f"r{i}": PNCounter() for i in range(replicas)}
    made: list[tuple[str, PNCounter, int]] = []
    for i, amount in enumerate(amounts):
        r = f"r{i % replicas}"
        delta = states[r].increment(r, amount)
        states[r].merge(delta)
        made.append((r, delta, states[r].value()))
    return made


@settings(max_examples=200, deadline=None)
@given(
    replicas=st.integers(1, 3),
    amounts=st.lists(st.integers(-5, 5).filter(bool), min_size=1, max_size=12),
    order=st.randoms(use_true_random=False),
    delivered=st.data(),
)
def test_counter_deltas_delivered_in_any_order_count_each_replica_once(
    replicas: int, amounts: list[int], order: object, delivered: st.DataObject
) -> None:
    """Out-of-order delivery (a replica's third increment before its second) keeps two of its entries for a while;
    a read counts that replica by its newest total only, never by both, so every read is a total the replica had."""
    made = _increment_deltas(replicas, amounts)
    subset = [i for i in range(len(made)) if delivered.draw(st.booleans())]
    order.shuffle(subset)  # type: ignore[attr-defined]
    receiver = PNCounter()
    newest: dict[str, int] = {}  # replica -> index in `made` of its newest delta delivered so far
    for i in subset:
        r, delta, _ = made[i]
        receiver.merge(delta.copy())
        newest[r] = max(newest.get(r, i), i)
        assert receiver.value() == sum(made[j][2] for j in newest.values())
    for _, delta, _ in made:
        receiver.merge(delta.copy())
    final = {r: total for r, _, total in made}  # each replica's last running total
    assert receiver.value() == sum(final.values())
    assert receiver._entry_count() == len(final)


def test_gcounter_third_increment_before_the_second_reads_the_newest_total() -> None:
    a = GCounter()
    d1 = a.increment("A", 5)
    a.merge(d1)
    d2 = a.increment("A", 1)
    a.merge(d2)
    d3 = a.increment("A", 1)
    a.merge(d3)
    b = GCounter()
    b.merge(d1)
    b.merge(d3)
    assert b.value() == 7  # not 5 + 7
    b.merge(d2)
    assert b.value() == 7 and b == a
