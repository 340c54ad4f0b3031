"""Semantics of the add-wins observed-remove set."""

from rumor.crdt import ORSet


def merged(*states: ORSet) -> ORSet:
    out = ORSet()
    for s in states:
        out.merge(s)
    return out


def test_add_wins_over_concurrent_remove() -> None:
    a = ORSet()
    a.merge(a.add("A", "x"))
    b = a.copy()
    a.merge(a.remove("x"))
    b.merge(b.add("B", "x"))
    assert merged(a, b).value() == frozenset({"x"})
    assert merged(b, a).value() == frozenset({"x"})


def test_remove_removes_only_what_its_context_observed() -> None:
    a = ORSet()
    a.merge(a.add("A", "x"))
    seen = a.context()
    a.merge(a.add("A", "x"))  # a second add the reader never saw
    a.merge(a.remove("x", seen))
    assert a.contains("x")
    a.merge(a.remove("x"))
    assert not a.contains("x")
    assert a.is_empty()


def test_remove_of_unseen_element_is_a_noop_and_readd_after_remove_works() -> None:
    a = ORSet()
    a.merge(a.remove("ghost"))
    assert a.is_empty()
    a.merge(a.add("A", 1))
    a.merge(a.remove(1))
    a.merge(a.add("A", 1))
    assert a.value() == frozenset({1})


def test_concurrent_adds_and_removes_converge_in_any_order() -> None:
    a, b, c = ORSet(), ORSet(), ORSet()
    deltas = [a.add("A", 1), b.add("B", 1), c.add("C", 2)]
    for d, s in zip(deltas, (a, b, c), strict=True):
        s.merge(d)
    b.merge(a)
    deltas.append(b.remove(1))  # removes both observed dots of 1
    x = merged(*deltas)
    y = merged(*reversed(deltas))
    assert x == y
    assert x.value() == frozenset({2})


def test_add_all_and_remove_all() -> None:
    s = ORSet()
    s.merge(s.add_all("A", ["a", "b", "c", "a"]))
    assert len(s) == 3
    s.merge(s.remove_all(["a", "c"]))
    assert sorted(s) == ["b"]


def test_state_stays_bounded_after_many_add_remove_cycles() -> None:
    s = ORSet()
    for i in range(10_000):
        s.merge(s.add("A", i))
        s.merge(s.remove(i))
    assert s.is_empty()
    assert s._entry_count() == 0
    assert s._ctx.size() == 1  # one vector entry; nothing per removed element
    assert s._dots == {}


def test_out_of_order_deltas_leave_no_permanent_cloud() -> None:
    src = ORSet()
    deltas = []
    for i in range(100):
        d = src.add("A", i)
        src.merge(d)
        deltas.append(d)
    dst = ORSet()
    for d in reversed(deltas):
        dst.merge(d)
    assert dst == src
    assert dst._ctx.cloud_size() == 0


def test_readding_keeps_one_dot_per_element() -> None:
    s = ORSet()
    for _ in range(50):
        s.merge(s.add("A", "x"))
    assert s._entry_count() == 1


def test_clear_is_an_observed_reset() -> None:
    a = ORSet()
    a.merge(a.add_all("A", [1, 2]))
    b = a.copy()
    b.merge(b.add("B", 3))
    a.merge(a.clear())
    a.merge(b)
    assert a.value() == frozenset({3})


def test_mutators_never_modify_self() -> None:
    s = ORSet()
    s.merge(s.add("A", 1))
    before = s.copy()
    s.add("A", 2)
    s.remove(1)
    s.clear()
    assert s == before
