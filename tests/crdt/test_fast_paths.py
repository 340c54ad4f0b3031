"""``crdt.fast_merge`` equals the general join: for every type, any delta its mutators make (and any full state), merged
through ``merge`` into any replica state, in any order, duplicated or not, gives the same store, index and context as
the general join (``_join_store`` then ``CausalContext.merge``), which is the reference here.
"""

from __future__ import annotations

from typing import Any

import pytest
from crdt_strategies import registered_type_names, replays
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor import crdt
from rumor.crdt import entries
from rumor.crdt.fast_merge import apply_write

TYPE_NAMES = registered_type_names()


def general_merge(state: Any, other: Any) -> None:
    """``merge`` with the general join only: the reference the fast path must equal."""
    state._join_store(other)
    state._ctx.merge(other._ctx)
    if isinstance(state, crdt.ORMap):
        for key in other._keys:
            if key in state._keys:
                state._index_key(key)
        return
    if other._deferred:
        state._add_deferred(other._deferred)
    if state._deferred:
        state._apply_deferred()


def assert_compact(state: Any) -> None:
    """A key's one entry is the tuple (replica, counter, payload), two or more a dict (crdt.entries), and both
    agree with the dot index: the form follows the count exactly, or equal stores would compare unequal."""
    for key, kd in state._keys.items():
        if type(kd) is tuple:
            assert len(kd) == 3 and state._dots[kd[0]][kd[1]] == key
        else:
            assert type(kd) is dict and len(kd) >= 2 and all(state._dots[r][c] == key for r, c in kd)
    assert sum(map(len, state._dots.values())) == sum(entries.count(kd) for kd in state._keys.values())


def assert_identical(a: Any, b: Any) -> None:
    assert a == b
    assert_compact(a)
    assert_compact(b)
    assert a._keys == b._keys and a._dots == b._dots and a._ctx == b._ctx
    if isinstance(a, crdt.ORMap):
        assert a._index == b._index


def is_one_entry(d: Any) -> bool:
    return len(d._keys) == 1 and all(entries.count(kd) == 1 for kd in d._keys.values())


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=150)
@given(data=st.data())
def test_merge_of_any_delta_sequence_equals_the_general_join(type_name: str, data: st.DataObject) -> None:
    r = data.draw(replays(type_name, max_steps=24))
    pool = [d for _, d in r.deltas] + r.states  # a full state holding one entry takes the fast path too
    if not pool:
        return
    start = data.draw(st.sampled_from([*r.states, r.empty()]))
    fast, reference = start.copy(), start.copy()
    # out of order, duplicated, skipping some: to replicas ahead of, behind or beside their origin
    order = data.draw(st.lists(st.integers(0, len(pool) - 1), max_size=3 * len(pool)))
    for i in order:
        d = pool[i]
        before = d.copy()
        fast.merge(d)
        general_merge(reference, d.copy())
        assert d == before
        assert_identical(fast, reference)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_one_entry_deltas_take_the_fast_path_and_others_change_nothing(type_name: str, data: st.DataObject) -> None:
    """The shape check: a one-entry delta with a small context is applied; anything else leaves the state as it was."""
    r = data.draw(replays(type_name))
    for _, d in r.deltas:
        target = data.draw(st.sampled_from([*r.states, r.empty()])).copy()
        untouched = target.copy()
        small = d._ctx.size() <= 8 and sum(d._ctx._vv.values()) + d._ctx.cloud_size() <= 8
        applied = apply_write(target, d)
        assert applied == (is_one_entry(d) and small)
        if not applied:
            assert_identical(target, untouched)


def test_common_writes_are_one_entry_deltas() -> None:
    """The shapes this path exists for, as their mutators make them (a change there would silently slow merges)."""
    ts = crdt.HLCTimestamp.now(None, 1)
    g = crdt.GCounter()
    for _ in range(3):
        g.merge(g.increment("a"))
    m = crdt.LWWMap()
    m.merge(m.set("a", "f", 1, ts))
    m.merge(m.set("b", "g", 1, ts))
    o = crdt.ORMap()
    o.merge(o.update("a", "k", crdt.GCounter, lambda c: c.increment("a")))
    deltas = [g.increment("a"), crdt.PNCounter().decrement("b"), m.set("b", "f", 2, ts),
              crdt.LWWRegister().write("a", 1, ts), crdt.MVRegister().write("a", 1), crdt.ORSet().add("a", 1),
              o.update("b", "k", crdt.GCounter, lambda c: c.increment("b"))]
    for d in deltas:
        assert is_one_entry(d)
        assert apply_write(type(d)(), d)


@pytest.mark.parametrize("writes_between", [0, 1, 2])
def test_an_overwrite_of_the_writers_own_entry_has_a_canonical_context(writes_between: int) -> None:
    """The writer's own overwrite is built on its own path (``_write_delta``): its context must be the one the
    general construction gives, in canonical form, whether the overwritten dot is the first or a later one and
    whatever the writer wrote in between (a context that is not canonical would compare unequal)."""
    ts = crdt.HLCTimestamp.now(None, 1)
    for first_writes in (0, 1):
        m = crdt.LWWMap()
        for i in range(first_writes):
            m.merge(m.set("a", f"before{i}", 0, ts))
        m.merge(m.set("a", "f", 1, ts))
        overwritten = m._keys["f"][1]
        for i in range(writes_between):
            m.merge(m.set("a", f"other{i}", 0, ts))
        delta = m.set("a", "f", 2, ts)
        c = overwritten + writes_between + 1
        assert delta._ctx == crdt.CausalContext([("a", overwritten), ("a", c)])
        assert delta._keys == {"f": ("a", c, (ts, "a", 2))}
        assert delta._dots == {"a": {c: "f"}}
        reference = crdt.CausalContext()
        reference.add(("a", overwritten))
        reference.add(("a", c))
        assert (delta._ctx._vv, delta._ctx._cloud) == (reference._vv, reference._cloud)
