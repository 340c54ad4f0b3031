"""Causal context compaction and version vector ordering; HLC monotonicity."""

from rumor.crdt import CausalContext, Dot, HLCTimestamp, HybridLogicalClock, Ordering, VersionVector


def test_context_folds_cloud_into_vector_when_gaps_fill() -> None:
    ctx = CausalContext([("A", 1), ("A", 3), ("A", 4), ("B", 2)])
    assert ctx.cloud_size() == 3
    ctx.add(Dot("A", 2))
    assert ctx.vector == VersionVector({"A": 4})
    assert ctx.cloud_size() == 1
    other = CausalContext([("B", 1)])
    ctx.merge(other)
    assert ctx.cloud_size() == 0
    assert ctx.vector == VersionVector({"A": 4, "B": 2})


def test_context_merge_raising_the_vector_prunes_the_cloud() -> None:
    ctx = CausalContext([("A", 5), ("A", 9)])
    ctx.merge(CausalContext.from_vector(VersionVector({"A": 7})))
    assert ctx.contains(("A", 9)) and ctx.contains(("A", 6))
    assert ctx.cloud_size() == 1
    assert not ctx.contains(("A", 8))


def test_covers_and_next_dot() -> None:
    big = CausalContext([("A", 1), ("A", 2), ("B", 5)])
    small = CausalContext([("A", 2), ("B", 5)])
    assert big.covers(small) and not small.covers(big)
    assert big.next_dot("A") == Dot("A", 3)
    assert big.next_dot("B") == Dot("B", 6)  # past everything seen, never reusing a dot


def test_version_vector_ordering() -> None:
    a = VersionVector({"A": 1})
    b = a.copy()
    assert a.compare(b) is Ordering.EQUAL
    b.increment("B")
    assert a.compare(b) is Ordering.BEFORE and b.compare(a) is Ordering.AFTER
    a.increment("A")
    assert a.compare(b) is Ordering.CONCURRENT
    a.merge(b)
    assert a.compare(b) is Ordering.AFTER and dict(a.items()) == {"A": 2, "B": 1}


def test_hlc_is_strictly_monotonic_even_when_physical_time_goes_back() -> None:
    clock = HybridLogicalClock()
    stamps = [clock.now(ms) for ms in (100, 100, 90, 101, 50)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[0] == HLCTimestamp(100, 0) and stamps[3] == HLCTimestamp(101, 0)


def test_hlc_receive_moves_past_remote() -> None:
    local = HLCTimestamp(100, 3)
    remote = HLCTimestamp(200, 7)
    t = local.observe(remote, 150)
    assert t > remote and t > local and t == HLCTimestamp(200, 8)
    assert HLCTimestamp(100, 0).observe(HLCTimestamp(90, 5), 300) == HLCTimestamp(300, 0)
