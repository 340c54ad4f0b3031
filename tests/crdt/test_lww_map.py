"""LWWMap semantics: causal writes beat clocks, concurrent writes tie-break on (hlc, replica), removes are observed."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.crdt import HLCTimestamp, LWWMap, ORSet, TypeMismatchError, decode, encode

HOUR_MS = 3_600_000


def ts(wall_ms: int, logical: int = 0) -> HLCTimestamp:
    return HLCTimestamp(wall_ms=wall_ms, logical=logical)


def wire(state: LWWMap) -> LWWMap:
    """What a peer receives: every shipped delta or state goes through the real encoding."""
    out = decode(encode(state))
    assert isinstance(out, LWWMap)
    assert out == state
    return out


def apply(state: LWWMap, delta: LWWMap) -> LWWMap:
    """Local updates go through merge exactly like remote ones; hand back the delta as shipped on the wire."""
    state.merge(delta)
    return wire(delta)


def synced(*states: LWWMap) -> None:
    """Full state exchange between every pair."""
    snapshot = [s.copy() for s in states]
    for s in states:
        for other in snapshot:
            s.merge(other)


def test_empty_map_is_bottom() -> None:
    m = LWWMap()
    assert m.is_empty()
    assert m.value() == {}
    assert m.get("x") is None
    assert m.field_versions("x") is None
    assert m == LWWMap()
    assert LWWMap.TYPE_NAME == "lwwmap"


def test_set_get_and_value_sorted_by_field() -> None:
    m = LWWMap()
    apply(m, m.set("a", "zeta", 1, ts(10)))
    apply(m, m.set("a", "alpha", {"nested": [1, 2]}, ts(11)))
    apply(m, m.set("a", "alpha", "overwritten", ts(12)))
    assert m.get("alpha") == "overwritten"
    assert list(m.value()) == ["alpha", "zeta"]
    assert m.value() == {"alpha": "overwritten", "zeta": 1}
    assert not m.is_empty()


def test_mutators_do_not_touch_self() -> None:
    m = LWWMap()
    before = m.copy()
    m.set("a", "f", 1, ts(1))
    m.remove("f")
    m.clear()
    assert m == before


def test_causally_later_write_wins_with_clock_an_hour_behind() -> None:
    a, b = LWWMap(), LWWMap()
    now = 10 * HOUR_MS
    b.merge(apply(a, a.set("a", "f", "first", ts(now))))
    # b's wall clock runs an hour behind, but b has seen a's write, so its write follows it causally.
    late = apply(b, b.set("b", "f", "second", ts(now - HOUR_MS)))
    a.merge(late)
    assert a.get("f") == b.get("f") == "second"
    version = a.field_versions("f")
    assert version is not None
    assert version.timestamp == ts(now - HOUR_MS)
    assert version.replica == "b"
    assert version.concurrent == 1  # the older write was superseded, not kept as a sibling


def test_concurrent_writes_tie_break_on_hlc_then_replica_in_every_merge_order() -> None:
    writes = [("a", "from-a", ts(100)), ("b", "from-b", ts(100)), ("c", "from-c", ts(99, 5))]
    deltas = []
    for replica, value, stamp in writes:
        r = LWWMap()
        deltas.append(r.set(replica, "f", value, stamp))
    results = []
    for order in itertools.permutations(deltas):
        r = LWWMap()
        for d in order:
            r.merge(d)
        results.append(r)
    for r in results:
        # equal HLC: larger replica id wins; c's smaller HLC loses regardless of its id.
        assert r.get("f") == "from-b"
        assert r == results[0]
        fv = r.field_versions("f")
        assert fv is not None and fv.concurrent == 3 and fv.replica == "b"


def test_concurrent_write_later_overwritten_by_one_that_saw_both() -> None:
    a, b = LWWMap(), LWWMap()
    da = apply(a, a.set("a", "f", "A", ts(200)))
    db = apply(b, b.set("b", "f", "B", ts(100)))
    a.merge(db)
    b.merge(da)
    assert a.get("f") == b.get("f") == "A"
    # b saw both siblings; its write replaces both even with the lowest clock.
    a.merge(apply(b, b.set("b", "f", "resolved", ts(50))))
    assert a.get("f") == b.get("f") == "resolved"
    fv = a.field_versions("f")
    assert fv is not None and fv.concurrent == 1


def test_concurrent_set_and_remove_the_write_survives() -> None:
    a, b = LWWMap(), LWWMap()
    b.merge(apply(a, a.set("a", "f", "v1", ts(10))))
    d_write = apply(a, a.set("a", "f", "v2", ts(11)))
    d_remove = apply(b, b.remove("f"))
    assert b.get("f") is None
    a.merge(d_remove)
    b.merge(d_write)
    assert a.get("f") == b.get("f") == "v2"
    assert a == b


def test_remove_with_read_context_spares_unseen_writes() -> None:
    a, b = LWWMap(), LWWMap()
    b.merge(apply(a, a.set("a", "f", "v1", ts(10))))
    read_ctx = b.context()
    b.merge(apply(a, a.set("a", "f", "v2", ts(11))))  # arrives after the client read
    apply(b, b.remove("f", read_ctx))
    assert b.get("f") == "v2"
    apply(b, b.remove("f"))
    assert b.get("f") is None
    assert b.is_empty()


def test_set_with_context_keeps_unseen_concurrent_write_as_sibling() -> None:
    a = LWWMap()
    apply(a, a.set("a", "f", "v1", ts(10)))
    read_ctx = a.context()
    apply(a, a.set("b", "f", "v2", ts(30)))  # unseen by the next writer
    apply(a, a.set("c", "f", "v3", ts(20), read_ctx))
    assert a.get("f") == "v2"  # concurrent and higher HLC
    fv = a.field_versions("f")
    assert fv is not None and fv.concurrent == 2


def test_clear_is_observed_reset() -> None:
    a, b = LWWMap(), LWWMap()
    b.merge(apply(a, a.set("a", "x", 1, ts(1))))
    b.merge(apply(a, a.set("a", "y", 2, ts(2))))
    d_concurrent = apply(a, a.set("a", "z", 3, ts(3)))
    d_clear = apply(b, b.clear())
    assert b.is_empty()
    a.merge(d_clear)
    b.merge(d_concurrent)
    assert a.value() == b.value() == {"z": 3}


def test_removed_field_can_be_set_again() -> None:
    a, b = LWWMap(), LWWMap()
    first = apply(a, a.set("a", "f", 1, ts(1)))
    b.merge(first)
    removal = apply(a, a.remove("f"))
    b.merge(removal)
    b.merge(apply(a, a.set("a", "f", 2, ts(2))))
    assert a.get("f") == b.get("f") == 2
    # replaying old deltas, in any order, must not resurrect or drop anything
    b.merge(removal)
    b.merge(first)
    assert a.get("f") == b.get("f") == 2
    assert a == b


def test_field_versions_reports_vector_and_timestamp() -> None:
    a, b = LWWMap(), LWWMap()
    b.merge(apply(a, a.set("a", "f", 1, ts(5))))
    b.merge(apply(a, a.set("a", "g", 1, ts(6))))
    apply(b, b.set("b", "f", 2, ts(7)))
    fv = b.field_versions("f")
    assert fv is not None
    assert fv.timestamp == ts(7)
    assert fv.replica == "b"
    assert fv.vector.get("b") == 1
    assert b.field_versions("missing") is None


def test_delta_of_one_field_is_small_and_merges_cheaply() -> None:
    m = LWWMap()
    for i in range(2000):
        m.merge(m.set("a", f"f{i}", i, ts(i + 1)))
    delta = m.set("a", "f7", "new", ts(10_000))
    assert list(delta.value()) == ["f7"]
    assert delta.context().size() <= 2  # its own dot and the one write it replaces
    assert len(encode(delta)) < 100 < len(encode(m)) // 100
    m.merge(delta)
    assert m.get("f7") == "new"


def test_merge_rejects_other_type() -> None:
    m = LWWMap()
    with pytest.raises(TypeMismatchError):
        m.merge(ORSet())  # type: ignore[arg-type]


_REPLICAS = ("a", "b", "c")
_op = st.tuples(
    st.integers(0, 2),  # replica index
    st.sampled_from(["set", "set", "remove", "sync"]),
    st.sampled_from(["f", "g", "h"]),
    st.integers(0, 5),  # wall clock (deliberately colliding and non-monotonic)
)


@given(st.lists(_op, max_size=30))
@settings(max_examples=60)
def test_replicas_converge_in_any_delivery_order(ops: list[tuple[int, str, str, int]]) -> None:
    replicas = [LWWMap() for _ in _REPLICAS]
    deltas: list[LWWMap] = []
    for idx, kind, fld, wall in ops:
        r = replicas[idx]
        if kind == "set":
            deltas.append(apply(r, r.set(_REPLICAS[idx], fld, f"{_REPLICAS[idx]}{wall}", ts(wall))))
        elif kind == "remove":
            deltas.append(apply(r, r.remove(fld)))
        else:
            r.merge(wire(replicas[(idx + 1) % 3]))
    forward, backward = LWWMap(), LWWMap()
    for d in deltas:
        forward.merge(d)
    for d in reversed(deltas):
        backward.merge(d)
        backward.merge(d)  # duplicates are harmless
    synced(*replicas)
    for r in replicas:
        assert r == forward
        assert r.value() == forward.value()
    assert backward == forward


def test_set_all_equals_set_after_set_and_leaves_the_state_alone() -> None:
    """The multi-field write a node makes: one delta, consecutive dots, as if each set were merged before the next."""
    ts = HLCTimestamp(5, 0)
    base = LWWMap()
    base.merge(base.set("A", "x", 1, HLCTimestamp(1, 0)))
    before = base.copy()
    batched = base.set_all("A", [("x", 2), ("y", 3)], ts)
    assert base == before

    stepwise = base.copy()
    for field, value in (("x", 2), ("y", 3)):
        stepwise.merge(stepwise.set("A", field, value, ts))
    base.merge(batched)
    assert base == stepwise
    assert base.value() == {"x": 2, "y": 3}


def test_remove_all_is_one_observed_remove() -> None:
    m = LWWMap()
    m.merge(m.set_all("A", [("x", 1), ("y", 2), ("z", 3)], HLCTimestamp(1, 0)))
    m.merge(m.remove_all(["x", "z"]))
    assert m.value() == {"y": 2}
