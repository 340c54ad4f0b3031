"""``delta_since``: a peer that sends only its context gets back what it lacks, and no more.

The law (equal to shipping the whole state, for every type and pair of replicas) is in ``test_laws.py``; here are
the shapes it must also keep small, and the cases a reader would worry about, pinned by name.
"""

from __future__ import annotations

import time

import pytest

from rumor import crdt
from rumor.crdt import HLCTimestamp, LWWMap, ORMap, ORSet

N = 100_000
TS = HLCTimestamp(1, 0)


def joined(b: crdt.DotKernel, x: crdt.DotKernel) -> crdt.DotKernel:
    b = b.copy()
    b.merge(crdt.decode(crdt.encode(x)))
    return b


@pytest.fixture(scope="module")
def big_map() -> LWWMap:
    m = LWWMap()
    m.merge(m.set_all("r0", ((f"field-{i}", i) for i in range(N)), TS))
    return m


@pytest.mark.parametrize("change", ["new field", "overwrite", "remove"])
def test_a_replica_that_missed_one_change_of_a_big_map_gets_a_tiny_delta(big_map: LWWMap, change: str) -> None:
    a, b = big_map.copy(), big_map.copy()
    if change == "new field":
        a.merge(a.set("r1", "fresh", "v", TS))
    elif change == "overwrite":
        a.merge(a.set("r1", f"field-{N // 2}", "v", TS))
    else:
        a.merge(a.remove(f"field-{N // 3}"))
    since = b.context()
    start = time.perf_counter()
    delta = a.delta_since(since)
    took = time.perf_counter() - start
    blob = crdt.encode(delta)
    print(f"\n{N}-field LWWMap, one {change} missed: delta_since {took * 1e3:.2f} ms, {len(blob)} bytes "
          f"(full state {len(crdt.encode(a))} bytes)")
    assert len(blob) < 200
    assert len(delta) == (0 if change == "remove" else 1)
    b.merge(crdt.decode(blob))
    assert b == a


def test_a_removal_reaches_a_peer_whose_context_already_covers_it() -> None:
    """A remove makes no dot, so the peer's context cannot show it missed one: the delta still names it."""
    a = ORSet()
    a.merge(a.add("r0", "x"))
    a.merge(a.add("r0", "y"))
    b = a.copy()
    a.merge(a.remove("x"))
    assert a.context() == b.context()
    delta = a.delta_since(b.context())
    assert delta.is_empty() and not delta.is_bottom()
    assert joined(b, delta) == a


def test_the_peers_own_unseen_entries_and_entries_both_hold_survive() -> None:
    a = ORSet()
    a.merge(a.add("r0", "shared"))
    b = a.copy()
    b.merge(b.add("r1", "only-b"))
    a.merge(a.add("r0", "only-a"))
    delta = a.delta_since(b.context())
    assert delta.elements() == ["only-a"]
    assert joined(b, delta) == joined(b, a)
    assert sorted(joined(b, delta).elements()) == ["only-a", "only-b", "shared"]


def test_deferred_removes_travel_with_the_delta() -> None:
    """A remove made with a read context of dots a has not received yet must still reach b, which has them."""
    b = ORSet()
    b.merge(b.add("r1", "x"))
    a = ORSet()
    a.merge(a.remove("x", b.context()))  # a client read x at b, then removed it through a
    assert a.deferred_removes() == 1
    delta = a.delta_since(b.context())
    assert delta.deferred_removes() == 1
    assert joined(b, delta) == joined(b, a)
    assert "x" not in joined(b, delta).elements()


def test_ormap_ships_only_the_nested_entries_the_peer_lacks() -> None:
    a = ORMap()
    for i in range(50):
        a.merge(a.update("r0", f"k{i}", ORSet, lambda s, i=i: s.add("r0", i)))
    b = a.copy()
    a.merge(a.update("r0", "k7", ORSet, lambda s: s.add("r0", "new")))
    a.merge(a.update("r0", "k9", ORSet, lambda s: s.remove(9)))
    delta = a.delta_since(b.context())
    assert delta.entry_count() == 1
    assert joined(b, delta) == a
    assert a.delta_since(ORMap().context()) == a
