"""The algebra every registered CRDT type must obey, checked on states built by replaying random replica histories.

Registry-driven: each test is parametrized over ``crdt.TYPES``, and ``test_every_registered_type_has_an_op_model``
fails the moment a type is registered without an op generator in ``crdt_strategies.MODELS``. Merge works in place,
so every law is checked on copies.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from crdt_strategies import (
    MODELS,
    Replay,
    Scenario,
    registered_type_names,
    registered_types,
    replay,
    replays,
    scenarios,
)
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from rumor import crdt
from rumor.crdt.plain_value import element_key

TYPE_NAMES = registered_type_names()
CONTRACT_TYPES = {"gcounter", "pncounter", "orset", "lwwregister", "mvregister", "lwwmap", "ormap"}


def join(*states: Any) -> Any:
    acc = states[0].copy()
    for s in states[1:]:
        acc.merge(s.copy())
    return acc


def typed(v: Any) -> Any:
    """A value with the type of every scalar made explicit: Python finds ``1 == 1.0 == True``, but a client
    reading JSON sees ``1``, ``1.0`` and ``true``, so converged replicas must agree on types too."""
    if isinstance(v, frozenset | set):
        return ("set", sorted((typed(x) for x in v), key=repr))
    if isinstance(v, dict):
        return ("dict", sorted((k, typed(x)) for k, x in v.items()))
    if isinstance(v, list | tuple):
        return (type(v).__name__, [typed(x) for x in v])
    return (type(v).__name__, v)


def observed(state: Any) -> Any:
    """What a reader sees, types included: an ORSet's frozenset value keeps one of 1, 1.0 and True, its
    ``elements()`` keeps them all."""
    return state.elements() if isinstance(state, crdt.ORSet) else state.value()


def assert_same(a: Any, b: Any) -> None:
    """Equal as states, as (typed) values and as bytes."""
    assert a == b
    assert typed(observed(a)) == typed(observed(b))
    assert crdt.encode(a) == crdt.encode(b)


def pick(r: Replay, data: st.DataObject, k: int) -> list[Any]:
    """k replica states (with repetition), sometimes the empty state: laws must hold for bottom too."""
    pool = [*r.states, r.empty()]
    return [pool[data.draw(st.integers(0, len(pool) - 1))] for _ in range(k)]


# ------------------------------------------------------------------------------------------------ registry


def test_every_registered_type_has_an_op_model() -> None:
    registry = registered_types()
    assert set(registry) >= CONTRACT_TYPES, f"contract types missing from crdt.TYPES: {CONTRACT_TYPES - set(registry)}"
    missing = sorted(set(registry) - set(MODELS))
    assert missing == [], f"registered CRDT types without an op generator in crdt_strategies.MODELS: {missing}"


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_registry_entry_matches_model_class(type_name: str) -> None:
    cls = MODELS[type_name].cls
    assert type_name == cls.TYPE_NAME
    assert registered_types()[type_name] is cls


@pytest.mark.parametrize(("left", "right"), list(itertools.permutations(TYPE_NAMES, 2)))
def test_merging_different_types_is_a_type_mismatch(left: str, right: str) -> None:
    a = MODELS[left].cls()
    with pytest.raises(crdt.TypeMismatchError):
        a.merge(MODELS[right].cls())
    assert a == MODELS[left].cls()


# ------------------------------------------------------------------------------------------------ join laws
# Generating a replayed history costs more than checking a law on it, so related laws share one test and one
# draw; max_examples is lowered to keep the suite inside its time budget (every law still sees ~60 histories
# per type per run, and dev runs draw new ones each time).


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_merge_is_a_join(type_name: str, data: st.DataObject) -> None:
    """Commutative, associative, idempotent, bottom is the identity, and any merge order converges."""
    r = data.draw(replays(type_name))
    a, b, c = pick(r, data, 3)
    bottom = r.empty()
    assert bottom.is_empty()
    assert_same(join(a, b), join(b, a))  # commutative
    assert_same(join(join(a, b), c), join(a, join(b, c)))  # associative
    ab = join(a, b)
    assert_same(join(a, a), a)  # idempotent
    assert_same(join(ab, b), ab)
    assert_same(join(ab, a), ab)
    assert_same(join(a, bottom), a)  # identity
    assert_same(join(bottom, a), a)
    order = data.draw(st.permutations(range(len(r.states))))
    assert_same(join(bottom, *(r.states[i] for i in order)), r.joined())  # order-independent convergence
    if ab.is_empty():  # the converse is not required: a PNCounter at 0 after +n-n still has history
        assert ab.value() == bottom.value()


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=40)
@given(data=st.data())
def test_merge_leaves_its_argument_alone_and_copies_are_independent(type_name: str, data: st.DataObject) -> None:
    r = data.draw(replays(type_name))
    a, b = pick(r, data, 2)
    b_before, a_before = b.copy(), a.copy()
    target = a.copy()
    target.merge(b)
    assert b == b_before
    assert a == a_before
    # mutate the merged copy further: neither source may change (no shared mutable structure)
    i = data.draw(st.integers(0, len(r.envs) - 1))
    target.merge(r.model.apply(target, r.envs[i], data.draw(r.model.ops)))
    assert b == b_before
    assert a == a_before


# ------------------------------------------------------------------------------------------------ mutators


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_mutators_are_pure_and_the_delta_equals_shipping_the_full_state(type_name: str, data: st.DataObject) -> None:
    """``s.merge(s.m())`` and shipping the delta to a replica t that has seen s equals shipping s's new full state."""
    r = data.draw(replays(type_name))
    i = data.draw(st.integers(0, len(r.states) - 1))
    j = data.draw(st.integers(0, len(r.states) - 1))
    s = r.states[i]
    before = s.copy()
    delta = r.model.apply(s, r.envs[i], data.draw(r.model.ops))
    assert s == before, "a mutator modified the state it was called on"
    after = s.copy()
    after.merge(delta)
    assert_same(join(after, delta), after)  # the delta is below the new state
    t = join(r.states[j], s)  # t has observed everything s had
    assert_same(join(t, delta), join(t, after))
    # every replica's context covers the deltas it made, and the cluster's join covers them all
    for origin, delta in r.deltas:
        assert r.states[origin].context().covers(delta.context())
    whole = r.joined()
    for _, delta in r.deltas:
        assert whole.context().covers(delta.context())


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_delta_since_a_context_equals_shipping_the_full_state(type_name: str, data: st.DataObject) -> None:
    """``b + a.delta_since(b.context()) == b + a`` for any two replicas (through encode/decode, as it travels);
    the delta is below ``a``, holds nothing against ``a``'s own context, and is all of ``a`` against nothing."""
    r = data.draw(replays(type_name))
    a, b = pick(r, data, 2)
    a_before = a.copy()
    delta = a.delta_since(b.context())
    assert a == a_before, "delta_since modified the state it was called on"
    assert_same(join(b, crdt.decode(crdt.encode(delta))), join(b, a))
    assert_same(join(a, delta), a)
    assert a.delta_since(a.context()).is_empty()
    assert_same(join(r.empty(), a.delta_since(r.empty().context())), a)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=40)
@given(data=st.data())
def test_clear_resets_what_was_observed_and_keeps_concurrent_updates(type_name: str, data: st.DataObject) -> None:
    r = data.draw(replays(type_name, min_replicas=2))
    s, t = r.states[0].copy(), r.states[1].copy()
    s.merge(s.clear())
    assert s.is_empty()
    # t's updates that s never observed survive s's clear; those s observed do not.
    merged = join(s, t)
    assert_same(merged, join(t, s))
    if t.context().covers(r.states[0].context()) and r.states[0].context().covers(t.context()):
        assert merged.is_empty()


# ------------------------------------------------------------------------------------------------ encoding


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_encoding_round_trips_and_is_deterministic(type_name: str, data: st.DataObject) -> None:
    """decode(encode(s)) == s, re-encoding gives the same bytes, and states equal through different merge
    orders (or built from deltas in reverse order) encode to the same bytes."""
    r = data.draw(replays(type_name))
    whole = r.joined()
    for s in [*r.states, whole]:
        blob = crdt.encode(s)
        back = crdt.decode(blob)
        assert type(back) is type(s)
        assert back == s
        assert back.value() == s.value()
        assert crdt.encode(back) == blob
        assert crdt.decode_context(crdt.encode_context(s.context())) == s.context()
    for _, delta in r.deltas:
        assert crdt.decode(crdt.encode(delta)) == delta
    order = data.draw(st.permutations(range(len(r.states))))
    pairwise = r.states[order[0]].copy()
    for i in order[1:]:
        pairwise.merge(r.states[i].copy())
    from_deltas = r.empty()
    for _, delta in reversed(r.deltas):
        from_deltas.merge(delta)
    assert crdt.encode(pairwise) == crdt.encode(whole)
    assert_same(from_deltas, whole)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
@settings(max_examples=10)
@given(data=st.data())
def test_replay_is_deterministic(type_name: str, data: st.DataObject) -> None:
    """The strategies themselves: replaying one scenario twice gives equal states (no hidden randomness)."""
    scenario = data.draw(replays(type_name)).scenario
    assert [crdt.encode(s) for s in replay(scenario).states] == [crdt.encode(s) for s in replay(scenario).states]


# ------------------------------------------------------------------------------------------------ regressions
# Shrunk failures found by the suites above, pinned verbatim. Each runs only its explicit example.


@settings(phases=[Phase.explicit])
@example(scenario=Scenario("orset", 2, (("mut", 0, ("add", 1)), ("mut", 1, ("add", True)))))
@example(scenario=Scenario("orset", 2, (("mut", 0, ("add", 1.0)), ("mut", 1, ("add", 1)))))
@given(scenario=scenarios("orset"))
def test_regression_orset_merge_order_picks_the_type_of_equal_elements(scenario: Scenario) -> None:
    a, b = replay(scenario).states
    assert_same(join(a, b), join(b, a))
    assert typed(observed(crdt.decode(crdt.encode(join(b, a))))) == typed(observed(join(b, a)))


# ------------------------------------------------------------------------------------------------ semantics
# The laws above hold for any join (a set that never removes is a fine semilattice), so the observed-remove
# types are also compared, replica by replica and step by step, with a naive reference: every write is an event
# with a unique tag, a remove/overwrite tombstones the live tags in its scope (the read snapshot, or all seen),
# and merge is plain set union. Tombstones make it slow and unbounded, and obviously right.


class Reference:
    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.events: dict[tuple[str, int], tuple[Any, Any]] = {}  # tag -> (key, payload)
        self.seen: set[tuple[str, int]] = set()
        self.dead: set[tuple[str, int]] = set()
        self.made = 0
        self.snapshot: set[tuple[str, int]] | None = None
        self.last_ts: crdt.HLCTimestamp | None = None

    def scope(self, flag: bool) -> set[tuple[str, int]]:
        return self.snapshot if flag and self.snapshot is not None else self.seen

    def kill(self, keys: Any, flag: bool) -> None:
        scope = self.scope(flag)
        strict = None if keys is None else {element_key(k) for k in keys}  # 1, 1.0 and True are distinct elements
        self.dead |= {
            t for t, (k, _) in self.events.items() if t in scope and (strict is None or element_key(k) in strict)
        }

    def write(self, key: Any, payload: Any, flag: bool = False) -> None:
        self.kill({key}, flag)
        self.made += 1
        tag = (self.replica, self.made)
        self.events[tag] = (key, payload)
        self.seen.add(tag)

    def merge(self, other: Reference) -> None:
        self.events |= other.events
        self.seen |= other.seen
        self.dead |= other.dead

    def live(self) -> list[tuple[Any, Any]]:
        return [kp for t, kp in self.events.items() if t not in self.dead]

    def ts(self, physical_ms: int) -> crdt.HLCTimestamp:
        self.last_ts = crdt.HLCTimestamp.now(self.last_ts, physical_ms)
        return self.last_ts

    def apply(self, type_name: str, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "clear":
            self.kill(None, op[1])
        elif kind in ("remove", "remove_all"):
            # a list, not a set: Python's set would fold 0 and -0.0 (and 1, 1.0, True), distinct elements here
            self.kill(list(op[1]) if kind == "remove_all" else [op[1]], op[2])
        elif kind == "add":
            self.write(op[1], None)
        elif kind == "add_all":
            for e in {element_key(e): e for e in op[1]}.values():  # strictly equal elements are identical
                self.write(e, None)
        elif kind == "set_all":  # one timestamp for every field, written one after the other
            stamp = self.ts(op[2])
            for field, value in op[1]:
                self.write(field, (stamp, self.replica, value), op[3])
        elif type_name == "mvregister":
            self.write(None, op[1], op[2])
        elif type_name == "lwwregister":
            self.write(None, (self.ts(op[2]), self.replica, op[1]), op[3])
        else:  # lwwmap set
            self.write(op[1], (self.ts(op[3]), self.replica, op[2]), op[4])

    def value(self, type_name: str) -> Any:
        live = self.live()
        if type_name == "orset":
            return sorted({element_key(k): k for k, _ in live}.values(), key=crdt.order_key)
        if type_name == "mvregister":
            return list({crdt.order_key(p): p for _, p in sorted(live, key=lambda kp: crdt.order_key(kp[1]))}.values())
        winners: dict[Any, tuple[Any, str, Any]] = {}
        for k, p in live:
            if k not in winners or p[:2] > winners[k][:2]:
                winners[k] = p
        if type_name == "lwwregister":
            return winners[None][2] if winners else None
        return {k: winners[k][2] for k in sorted(winners)}


REFERENCE_TYPES = [t for t in ("orset", "mvregister", "lwwregister", "lwwmap") if t in TYPE_NAMES]


STALE_READ_REMOVE = Scenario("orset", 2, (("read", 0), ("mut", 0, ("add", 0)), ("mut", 0, ("remove", 0, True))))
ADD_WINS = Scenario("orset", 2, (("mut", 0, ("add", "x")), ("merge", 1, 0), ("mut", 0, ("remove", "x", False)),
                                 ("mut", 1, ("add", "x")), ("merge", 0, 1), ("merge", 1, 0)))
STALE_READ_WRITE = Scenario("mvregister", 2, (("mut", 1, ("write", "old", False)), ("merge", 0, 1), ("read", 0),
                                              ("mut", 1, ("write", "new", False)), ("merge", 0, 1),
                                              ("mut", 0, ("write", "mine", True))))
LWW_CAUSAL_BEATS_CLOCK = Scenario("lwwregister", 2, (("mut", 0, ("write", "early", 6, False)), ("merge", 1, 0),
                                                     ("mut", 1, ("write", "late", 0, False)), ("merge", 0, 1)))
LWWMAP_STALE_REMOVE = Scenario("lwwmap", 2, (("read", 0), ("mut", 0, ("set", "f", 1, 3, False)),
                                             ("mut", 0, ("remove", "f", True)), ("mut", 1, ("set", "g", 2, 3, False)),
                                             ("merge", 0, 1)))


REMOVE_ALL_OF_EQUAL_ELEMENTS = Scenario("orset", 2, (("mut", 0, ("add_all", (-0.0,))),
                                                    ("mut", 0, ("remove_all", (0, -0.0), True))))


@settings(max_examples=200)
@example(scenario=REMOVE_ALL_OF_EQUAL_ELEMENTS)
@example(scenario=STALE_READ_REMOVE)
@example(scenario=ADD_WINS)
@example(scenario=STALE_READ_WRITE)
@example(scenario=LWW_CAUSAL_BEATS_CLOCK)
@example(scenario=LWWMAP_STALE_REMOVE)
@given(scenario=st.sampled_from(REFERENCE_TYPES).flatmap(scenarios))
def test_observed_remove_types_match_a_tombstone_reference(scenario: Scenario) -> None:
    type_name = scenario.type_name
    model = MODELS[type_name]
    states = [model.cls() for _ in range(scenario.replicas)]
    envs = replay(Scenario(type_name, scenario.replicas, ())).envs
    refs = [Reference(env.replica) for env in envs]
    for step in scenario.steps:
        i = step[1]
        if step[0] == "mut":
            states[i].merge(model.apply(states[i], envs[i], step[2]))
            refs[i].apply(type_name, step[2])
        elif step[0] == "merge":
            states[i].merge(states[step[2]].copy())
            refs[i].merge(refs[step[2]])
        else:
            envs[i].snapshot = states[i].context()
            refs[i].snapshot = set(refs[i].seen)
        assert typed(observed(states[i])) == typed(refs[i].value(type_name)), f"replica {i} after {step}"
