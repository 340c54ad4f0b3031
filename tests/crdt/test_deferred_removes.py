"""Removes made with another replica's read context: delivered before the adds they observed, they still stick.

The law (issue 11): a remove, overwrite or clear made on replica B with the context of a read on replica A, which B
has not caught up with, converges to the same state whether it reaches a replica before or after A's adds, and
removes exactly what it would have removed had B caught up with A first. Every type but ORMap (whose nested stores
do not defer yet) is checked; the deferred removes are gone once everything is delivered.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from crdt_strategies import MODELS, Replay, replays
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.crdt import LWWMap, ORSet, decode, encode

DEFERRING_TYPES = ["orset", "lwwmap", "mvregister", "lwwregister", "pncounter", "gcounter"]
#: ops that only remove (no new dot, no timestamp): their outcome is comparable with "caught up first"
REMOVE_KINDS = {"remove", "remove_all", "clear"}


def foreign_remove(type_name: str) -> st.SearchStrategy[tuple[Replay, tuple[Any, ...]]]:
    """A replay of at least two replicas, and one op (with the context flag set where it has one) for replica 1."""
    ops = MODELS[type_name].ops.map(lambda op: (*op[:-1], True) if isinstance(op[-1], bool) else op)
    return st.tuples(replays(type_name, min_replicas=2), ops)


def _check(type_name: str, replay: Replay, op: tuple[Any, ...]) -> None:
    model = MODELS[type_name]
    a, b = replay.states[0], replay.states[1]
    env = copy.deepcopy(replay.envs[1])
    env.snapshot = a.context()  # a client read on A, and hands B that read's context
    delta = model.apply(b, env, op)
    assert decode(encode(delta)) == delta  # deferred removes travel (and are logged) like the rest of a delta
    b_after = b.copy()
    b_after.merge(delta)

    remove_first = b_after.copy()
    remove_first.merge(a.copy())  # B's remove reaches B's replica before A's adds
    adds_first = a.copy()
    adds_first.merge(b_after.copy())  # ... or A, which had the adds all along
    assert remove_first == adds_first, f"{op} from a foreign context depends on delivery order"
    assert remove_first.deferred_removes() == 0  # everything the read saw has arrived: nothing left waiting

    if op[0] in REMOVE_KINDS:
        caught_up = b.copy()
        caught_up.merge(a.copy())
        caught_up.merge(model.apply(caught_up, copy.deepcopy(env), op))
        assert remove_first.value() == caught_up.value(), f"{op} removed other than a caught-up replica would"


@pytest.mark.parametrize("type_name", DEFERRING_TYPES)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_a_remove_with_a_foreign_context_converges_whatever_the_delivery_order(type_name: str,
                                                                              data: st.DataObject) -> None:
    replay, op = data.draw(foreign_remove(type_name))
    _check(type_name, replay, op)


def test_the_issue_case_an_observed_remove_on_a_node_behind_sticks() -> None:
    """Partitioned a and b: add x, y on a; read on a; remove x on b with that read's context; heal."""
    a, b = ORSet(), ORSet()
    a.merge(a.add_all("a", ["x", "y"]))
    read = a.context()
    removal = b.remove("x", read)
    b.merge(removal)
    assert b.deferred_removes() == 1 and b.value() == frozenset()
    b.merge(a.copy())
    a.merge(b.copy())
    assert a == b and a.value() == {"y"} and a.deferred_removes() == 0


def test_an_add_after_the_read_survives_a_deferred_remove() -> None:
    a, b = ORSet(), ORSet()
    a.merge(a.add("a", "x"))
    read = a.context()
    a.merge(a.add("a", "x"))  # re-added after the read: a dot the client never saw
    b.merge(b.remove("x", read))
    b.merge(a.copy())
    assert b.value() == {"x"}


def test_deferred_removes_of_one_context_merge_into_one_entry_and_are_bounded() -> None:
    a, b = LWWMap(), LWWMap()
    from rumor.crdt import HLCTimestamp

    a.merge(a.set_all("a", [("f", 1), ("g", 2)], HLCTimestamp(1, 0)))
    read = a.context()
    b.merge(b.remove("f", read))
    b.merge(b.remove("g", read))
    assert b.deferred_removes() == 1
    b.merge(a.copy())
    assert b.value() == {} and b.deferred_removes() == 0


def test_a_state_defers_at_most_max_deferred_removes_of_its_own() -> None:
    from rumor.crdt import CausalContext, InvalidOperationError
    from rumor.crdt.dot_kernel import MAX_DEFERRED

    s = ORSet()
    for i in range(1, MAX_DEFERRED + 1):
        s.merge(s.remove("x", CausalContext([("far", i)])))
    assert s.deferred_removes() == MAX_DEFERRED
    with pytest.raises(InvalidOperationError):
        s.remove("x", CausalContext([("far", MAX_DEFERRED + 1)]))
    s.merge(s.remove("x", CausalContext([("far", 1)])))  # a context already waiting adds nothing: still fine
    caught_up = ORSet()
    caught_up.merge(caught_up.add_all("far", range(MAX_DEFERRED + 1)))
    s.merge(caught_up)
    assert s.deferred_removes() == 0
