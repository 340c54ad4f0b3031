"""ORMap semantics: observed-remove of keys with reset of the nested value, nesting, type binding, small deltas."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.crdt import (
    DecodeError,
    GCounter,
    HLCTimestamp,
    InvalidOperationError,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    TypeMismatchError,
    decode,
    encode,
)
from rumor.crdt.wire_values import value_to_wire


def wire(state: ORMap) -> ORMap:
    """What a peer receives: every shipped delta or state goes through the real encoding."""
    out = decode(encode(state))
    assert isinstance(out, ORMap)
    assert out == state
    return out


def apply(state: ORMap, delta: ORMap) -> ORMap:
    """Local updates go through merge exactly like remote ones; hand back the delta as shipped on the wire."""
    state.merge(delta)
    return wire(delta)


def add(state: ORMap, replica: str, key: str, element: object) -> ORMap:
    return apply(state, state.update(replica, key, ORSet, lambda s: s.add(replica, element)))


def test_empty_map_is_bottom() -> None:
    m = ORMap()
    assert m.is_empty()
    assert m.value() == {}
    assert m.get("k") is None
    assert "k" not in m
    assert len(m) == 0
    assert ORMap.TYPE_NAME == "ormap"


def test_update_get_and_value() -> None:
    m = ORMap()
    add(m, "a", "tags", "x")
    add(m, "a", "tags", "y")
    apply(m, m.update("a", "hits", GCounter, lambda c: c.increment("a", 3)))
    apply(m, m.update("a", "name", LWWRegister, lambda r: r.write("a", "rumor", HLCTimestamp(wall_ms=5, logical=0))))
    nested = m.get("tags")
    assert isinstance(nested, ORSet)
    assert nested.value() == frozenset({"x", "y"})
    assert m.value() == {"hits": 3, "name": "rumor", "tags": frozenset({"x", "y"})}
    assert list(m.value()) == sorted(m.value())
    assert "tags" in m and len(m) == 3
    assert sorted(m.keys()) == ["hits", "name", "tags"]


def test_get_returns_an_independent_copy() -> None:
    m = ORMap()
    add(m, "a", "tags", "x")
    nested = m.get("tags")
    assert nested is not None
    nested.merge(nested.add("a", "sneaky"))
    assert m.value() == {"tags": frozenset({"x"})}


def test_mutators_do_not_touch_self() -> None:
    m = ORMap()
    add(m, "a", "tags", "x")
    before = m.copy()
    m.update("a", "tags", ORSet, lambda s: s.add("a", "y"))
    m.remove("tags")
    m.clear()
    assert m == before


def test_concurrent_remove_and_nested_add_keeps_only_the_concurrent_add() -> None:
    a, b = ORMap(), ORMap()
    b.merge(add(a, "a", "tags", "x"))
    b.merge(add(a, "a", "tags", "y"))
    d_remove = apply(a, a.remove("tags"))
    d_add = add(b, "b", "tags", "z")
    a.merge(d_add)
    b.merge(d_remove)
    # add-wins for the key, reset for its contents: the observed x and y are gone.
    assert a.value() == b.value() == {"tags": frozenset({"z"})}
    assert a == b


def test_concurrent_remove_and_nested_remove_of_element() -> None:
    a, b = ORMap(), ORMap()
    b.merge(add(a, "a", "tags", "x"))
    d1 = apply(a, a.remove("tags"))
    d2 = apply(b, b.update("b", "tags", ORSet, lambda s: s.remove("x")))
    a.merge(d2)
    b.merge(d1)
    assert a.value() == b.value() == {}
    assert a.is_empty() and b.is_empty()


def test_remove_with_read_context_spares_unseen_updates() -> None:
    a, b = ORMap(), ORMap()
    b.merge(add(a, "a", "tags", "x"))
    read_ctx = b.context()
    b.merge(add(a, "a", "tags", "y"))
    apply(b, b.remove("tags", read_ctx))
    assert b.value() == {"tags": frozenset({"y"})}


def test_clear_is_observed_reset_of_every_key() -> None:
    a, b = ORMap(), ORMap()
    b.merge(add(a, "a", "k1", 1))
    b.merge(add(a, "a", "k2", 2))
    d_concurrent = add(a, "a", "k2", 3)
    d_clear = apply(b, b.clear())
    assert b.is_empty()
    a.merge(d_clear)
    b.merge(d_concurrent)
    assert a.value() == b.value() == {"k2": frozenset({3})}


def test_nested_maps_two_levels_deep() -> None:
    a, b = ORMap(), ORMap()

    def add_deep(state: ORMap, replica: str, outer: str, inner: str, element: object) -> ORMap:
        return apply(
            state,
            state.update(
                replica, outer, ORMap, lambda m: m.update(replica, inner, ORSet, lambda s: s.add(replica, element))
            ),
        )

    b.merge(add_deep(a, "a", "users", "alice", "admin"))
    b.merge(add_deep(a, "a", "users", "bob", "dev"))
    assert a.value() == {"users": {"alice": frozenset({"admin"}), "bob": frozenset({"dev"})}}

    # a drops the whole "users" key; b concurrently adds a role to alice two levels down.
    d_remove = apply(a, a.remove("users"))
    d_deep = add_deep(b, "b", "users", "alice", "ops")
    a.merge(d_deep)
    b.merge(d_remove)
    assert a.value() == b.value() == {"users": {"alice": frozenset({"ops"})}}

    # removing an inner key from inside the nested map
    d_inner = apply(a, a.update("a", "users", ORMap, lambda m: m.remove("alice")))
    b.merge(d_inner)
    assert a.value() == b.value() == {}
    assert a == b


def test_lwwmap_and_registers_nested() -> None:
    a, b = ORMap(), ORMap()
    t = HLCTimestamp(wall_ms=1_000, logical=0)
    b.merge(apply(a, a.update("a", "profile", LWWMap, lambda p: p.set("a", "city", "Lisbon", t))))
    d1 = apply(a, a.update("a", "note", MVRegister, lambda r: r.write("a", "from a")))
    d2 = apply(b, b.update("b", "note", MVRegister, lambda r: r.write("b", "from b")))
    # b's write follows a's profile write causally even though its clock is behind
    d3 = apply(
        b,
        b.update("b", "profile", LWWMap, lambda p: p.set("b", "city", "Porto", HLCTimestamp(wall_ms=1, logical=0))),
    )
    for d in (d2, d3):
        a.merge(d)
    b.merge(d1)
    assert a == b
    assert a.value()["profile"] == {"city": "Porto"}
    assert sorted(a.value()["note"]) == ["from a", "from b"]


def inc(state: ORMap, replica: str, key: str, amount: int) -> ORMap:
    return apply(state, state.update(replica, key, PNCounter, lambda c: c.increment(replica, amount)))


def test_counters_in_maps_sum_contributions_of_every_replica() -> None:
    a, b = ORMap(), ORMap()
    d1 = inc(a, "a", "score", 5)
    d2 = inc(b, "b", "score", -2)
    d3 = apply(b, b.update("b", "hits", GCounter, lambda c: c.increment("b", 4)))
    for d in (d2, d3):
        a.merge(d)
    b.merge(d1)
    assert a.value() == b.value() == {"hits": 4, "score": 3}
    b.merge(inc(a, "a", "score", 1))
    assert b.value() == {"hits": 4, "score": 4}


def test_counter_reset_keeps_the_concurrent_incrementers_running_total() -> None:
    a, b = ORMap(), ORMap()
    b.merge(inc(a, "a", "score", 5))
    a.merge(inc(b, "b", "score", 3))
    d_remove = apply(b, b.remove("score"))
    d_inc = inc(a, "a", "score", 2)
    a.merge(d_remove)
    b.merge(d_inc)
    # b's observed 3 is reset; a's entry carries a's whole running total (5 + 2), as Riak's embedded counter.
    assert a.value() == b.value() == {"score": 7}


def test_counter_reset_without_concurrent_increment_starts_from_zero() -> None:
    a, b = ORMap(), ORMap()
    b.merge(inc(a, "a", "score", 5))
    a.merge(apply(b, b.remove("score")))
    assert a.value() == {}
    b.merge(inc(a, "a", "score", 2))  # causally after the remove: counts from the empty value
    assert a.value() == b.value() == {"score": 2}


def test_map_counter_increments_out_of_order_count_the_replica_once() -> None:
    a, b = ORMap(), ORMap()
    d1 = inc(a, "a", "score", 5)
    d2 = inc(a, "a", "score", 1)
    d3 = inc(a, "a", "score", -1)
    b.merge(d1)
    b.merge(d3)
    assert b.value() == {"score": 5}  # a's newest total, not 5 + 5
    b.merge(d2)
    assert b.value() == a.value() == {"score": 5} and b == a


def test_mutate_must_return_a_scoped_delta() -> None:
    m = ORMap()
    add(m, "a", "k1", 1)
    add(m, "a", "k2", 2)
    # returning the whole nested value (whose context is the map's) would reset the other keys once merged
    with pytest.raises(InvalidOperationError):
        m.update("a", "k1", ORSet, lambda s: s)
    with pytest.raises(InvalidOperationError):
        m.update("a", "k1", ORSet, lambda s: s.add("someone-else", 9))
    assert m.value() == {"k1": frozenset({1}), "k2": frozenset({2})}


def test_value_handed_to_mutate_is_read_only() -> None:
    m = ORMap()
    add(m, "a", "tags", "x")
    add(m, "a", "hits", 1)
    m.merge(m.update("a", "n", GCounter, lambda c: c.increment("a", 2)))
    before = m.copy()

    def sneaky_set(s: ORSet) -> ORSet:
        s.merge(s.add("a", "y"))  # merging into the value under update instead of returning the delta
        return s.add("a", "z")

    def sneaky_counter(c: GCounter) -> GCounter:
        c.merge(c.increment("a", 5))
        return c.increment("a")

    with pytest.raises((TypeError, AttributeError)):
        m.update("a", "tags", ORSet, sneaky_set)
    with pytest.raises((TypeError, AttributeError)):
        m.update("a", "n", GCounter, sneaky_counter)
    assert m == before
    # reading and copying the value under update is fine and consistent
    seen: list[object] = []

    def reader(s: ORSet) -> ORSet:
        snapshot = s.copy()
        snapshot.merge(snapshot.add("a", "local-only"))
        seen.append(snapshot.value())
        seen.append(s.value())
        return s.add("a", "y")

    m.merge(m.update("a", "tags", ORSet, reader))
    assert seen == [frozenset({"x", "local-only"}), frozenset({"x"})]
    assert m.value()["tags"] == frozenset({"x", "y"})


def test_key_used_with_another_kind_raises() -> None:
    m = ORMap()
    add(m, "a", "k", 1)
    with pytest.raises(TypeMismatchError):
        m.update("a", "k", GCounter, lambda c: c.increment("a"))
    # mutate must return a delta of the declared kind
    with pytest.raises(TypeMismatchError):
        m.update("a", "other", ORSet, lambda s: GCounter().increment("a"))  # type: ignore[arg-type,return-value]
    # after a remove the key may be rebound to another kind
    apply(m, m.remove("k"))
    apply(m, m.update("a", "k", GCounter, lambda c: c.increment("a", 2)))
    assert m.value() == {"k": 2}


def test_concurrent_binding_to_two_kinds_converges_deterministically() -> None:
    a, b = ORMap(), ORMap()
    da = add(a, "a", "k", "x")
    db = apply(b, b.update("b", "k", GCounter, lambda c: c.increment("b", 4)))
    a.merge(db)
    b.merge(da)
    assert a == b
    assert a.value() == b.value()
    assert sorted(k.TYPE_NAME for k in a.kinds("k")) == ["gcounter", "orset"]
    # either bound kind can still be updated; a remove resets both
    apply(a, a.update("a", "k", GCounter, lambda c: c.increment("a")))
    apply(a, a.remove("k"))
    assert a.value() == {}


def test_merge_rejects_other_type() -> None:
    with pytest.raises(TypeMismatchError):
        ORMap().merge(ORSet())  # type: ignore[arg-type]


def test_delta_of_one_key_in_a_large_map_stays_small() -> None:
    m = ORMap()
    n = 20_000
    for i in range(n):
        m.merge(m.update("a", f"k{i}", ORSet, lambda s, i=i: s.add("a", i)))
    delta = m.update("a", "k123", ORSet, lambda s: s.add("a", "extra"))
    assert list(delta.keys()) == ["k123"]
    assert delta.entry_count() == 1
    m.merge(delta)
    assert m.get("k123") is not None
    assert m.value()["k123"] == frozenset({123, "extra"})
    assert len(m) == n
    encoded = len(encode(delta))
    assert encoded < 120 < len(encode(m)) // 1000
    removal = m.remove("k999")
    assert removal.entry_count() == 0
    assert removal.context().size() == 1
    assert len(encode(removal)) < 60
    m.merge(wire(removal))
    assert "k999" not in m and len(m) == n - 1


_REPLICAS = ("a", "b", "c")
_op = st.tuples(
    st.integers(0, 2),
    st.sampled_from(["add", "add", "remove_el", "remove_key", "inc", "deep", "sync"]),
    st.sampled_from(["k", "m"]),
    st.integers(0, 3),
)


def _do(r: ORMap, replica: str, kind: str, key: str, n: int) -> ORMap | None:
    if kind == "add":
        return r.update(replica, key, ORSet, lambda s: s.add(replica, n))
    if kind == "remove_el":
        return r.update(replica, key, ORSet, lambda s: s.remove(n))
    if kind == "remove_key":
        return r.remove(key)
    if kind == "inc":
        return r.update(replica, f"{key}-count", PNCounter, lambda c: c.increment(replica, n - 1 or 1))
    if kind == "deep":
        return r.update(
            replica, f"{key}-deep", ORMap, lambda inner: inner.update(replica, "s", ORSet, lambda s: s.add(replica, n))
        )
    return None


@given(st.lists(_op, max_size=30))
@settings(max_examples=60)
def test_replicas_converge_in_any_delivery_order(ops: list[tuple[int, str, str, int]]) -> None:
    replicas = [ORMap() for _ in _REPLICAS]
    deltas: list[ORMap] = []
    for idx, kind, key, n in ops:
        r = replicas[idx]
        try:
            delta = _do(r, _REPLICAS[idx], kind, key, n)
        except TypeMismatchError:
            continue
        if delta is None:
            r.merge(wire(replicas[(idx + 1) % 3]))
            continue
        deltas.append(apply(r, delta))
    forward, backward = ORMap(), ORMap()
    for d in deltas:
        forward.merge(d)
    for d in reversed(deltas):
        backward.merge(d)
        backward.merge(d)
    snapshot = [r.copy() for r in replicas]
    for r in replicas:
        for other in snapshot:
            r.merge(other)
        assert r == forward
        assert r.value() == forward.value()
    assert backward == forward


def _ormap_bytes(replica: str, counter: int, key: object, payload: object) -> bytes:
    body = [[[[replica, counter]], []], [[replica, [[counter, value_to_wire(key), value_to_wire(payload)]]]]]
    return msgpack.packb([1, "ormap", body], use_bin_type=True)


def test_decoding_validates_nested_entries_by_their_kind() -> None:
    ok = decode(_ormap_bytes("a", 1, ("k", "gcounter", "a"), 5))
    assert isinstance(ok, ORMap) and ok.value() == {"k": 5}
    deep = decode(_ormap_bytes("a", 1, ("k", "ormap", ("j", "orset", 7)), None))
    assert isinstance(deep, ORMap) and deep.value() == {"k": {"j": frozenset({7})}}
    bad = [
        (("k", "nosuchtype", 1), None),  # unknown kind
        (("k", "orset"), None),  # wrong key shape
        ((1, "orset", 1), None),  # non-str map key
        ("k", None),  # not a composite key
        (("k", "gcounter", "b"), 5),  # counter entry keyed by another replica
        (("k", "gcounter", "a"), 0),  # non-positive total
        (("k", "orset", [1]), None),  # unhashable element
        (("k", "ormap", ("j", "lwwregister", None)), "not-a-timestamp-triple"),  # bad payload two levels down
    ]
    for key, payload in bad:
        with pytest.raises(DecodeError):
            decode(_ormap_bytes("a", 1, key, payload))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "discard", "drop", "inc"]), st.sampled_from(["x", "y"]), st.integers(1, 3)
        ),
        max_size=25,
    )
)
@settings(max_examples=50)
def test_single_replica_matches_a_dict_model(ops: list[tuple[str, str, int]]) -> None:
    m = ORMap()
    model_sets: dict[str, set[int]] = {}
    model_counts: dict[str, int] = {}
    for op, key, n in ops:
        if op == "add":
            m.merge(m.update("a", key, ORSet, lambda s, n=n: s.add("a", n)))
            model_sets.setdefault(key, set()).add(n)
        elif op == "discard":
            m.merge(m.update("a", key, ORSet, lambda s, n=n: s.remove(n)))
            if n in model_sets.get(key, set()):
                model_sets[key].discard(n)
                if not model_sets[key]:
                    del model_sets[key]
        elif op == "drop":
            m.merge(m.remove(key))
            m.merge(m.remove(f"{key}#"))
            model_sets.pop(key, None)
            model_counts.pop(f"{key}#", None)
        else:
            m.merge(m.update("a", f"{key}#", GCounter, lambda c, n=n: c.increment("a", n)))
            model_counts[f"{key}#"] = model_counts.get(f"{key}#", 0) + n
    expected: dict[str, object] = {k: frozenset(v) for k, v in model_sets.items()}
    expected.update(model_counts)
    assert m.value() == dict(sorted(expected.items()))
    assert m.keys() == sorted(expected)
    assert wire(m) == m
