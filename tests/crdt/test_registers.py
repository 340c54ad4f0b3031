"""Semantics of LWWRegister and MVRegister."""

from rumor.crdt import HLCTimestamp, LWWRegister, MVRegister

HOUR_MS = 3_600_000


def test_concurrent_lww_writes_tie_break_by_timestamp_then_replica() -> None:
    base = LWWRegister()
    a, b = base.write("A", "from-a", HLCTimestamp(100, 0)), base.write("B", "from-b", HLCTimestamp(100, 0))
    x, y = LWWRegister(), LWWRegister()
    x.merge(a)
    x.merge(b)
    y.merge(b)
    y.merge(a)
    assert x == y
    assert x.value() == "from-b"  # equal clocks: larger replica id wins
    later = LWWRegister().write("C", "late-c", HLCTimestamp(101, 0))  # concurrent, larger clock
    x.merge(later)
    assert x.value() == "late-c"


def test_causally_later_write_wins_even_with_a_clock_an_hour_behind() -> None:
    r = LWWRegister()
    r.merge(r.write("A", "first", HLCTimestamp(10 * HOUR_MS, 0)))
    r.merge(r.write("B", "second", HLCTimestamp(9 * HOUR_MS, 0)))  # B saw "first"
    assert r.value() == "second"
    assert r.timestamp() == HLCTimestamp(9 * HOUR_MS, 0)
    assert r._entry_count() == 1


def test_lww_write_with_stale_context_competes_by_clock() -> None:
    r = LWWRegister()
    seen = r.context()
    r.merge(r.write("A", "newer", HLCTimestamp(50, 0)))
    r.merge(r.write("B", "stale", HLCTimestamp(40, 0), seen))
    assert r.value() == "newer"


def test_empty_registers() -> None:
    assert LWWRegister().value() is None and LWWRegister().timestamp() is None
    assert MVRegister().value() == []


def test_mv_siblings_appear_and_collapse() -> None:
    a, b = MVRegister(), MVRegister()
    a.merge(a.write("A", "x"))
    b.merge(b.write("B", 1))
    a.merge(b)
    assert a.value() == [1, "x"]  # ints sort before strings: deterministic
    a.merge(a.write("A", "resolved"))
    assert a.value() == ["resolved"]
    b.merge(a)
    assert b.value() == ["resolved"]


def test_mv_write_with_context_keeps_unseen_sibling() -> None:
    a = MVRegister()
    seen = a.context()
    b = MVRegister()
    b.merge(b.write("B", "b"))
    a.merge(b)
    a.merge(a.write("A", "a", seen))
    assert a.value() == ["a", "b"]


def test_mv_equal_concurrent_values_listed_once() -> None:
    a, b = MVRegister(), MVRegister()
    a.merge(a.write("A", [1, 2]))
    b.merge(b.write("B", [1, 2]))
    a.merge(b)
    assert a.value() == [[1, 2]]
