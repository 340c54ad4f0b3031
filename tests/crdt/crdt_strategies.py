"""Hypothesis strategies that build CRDT states the way a cluster does: by replaying random ops on replicas.

Nothing here pokes internals. A ``Scenario`` is plain data (a type name, a replica count and a list of steps)
so hypothesis shrinks it to a short, printable history and a failure can be pinned verbatim as an ``@example``
or a named regression test. Each type has a ``Model``: which mutators with which arguments (``ops``), and how
one op becomes a delta (``apply``). Steps are:

* ``("mut", i, op)``  replica i generates a delta with one mutator and merges it into itself;
* ``("merge", i, j)`` replica i merges a copy of replica j's full state (gives states causal history);
* ``("read", i)``     replica i snapshots its ``context()``; later ops with a context flag pass that snapshot,
  which is how a client's read-with-context limits a remove / overwrite to what it saw.

LWW timestamps come from a per-replica hybrid logical clock fed with a physical time drawn in the op (so
clocks are skewed and ties happen). Replica ids are ``"r0".."r4"``.

A model's ``cls`` is the class of that name in ``crdt``; the law suite fails when ``crdt.TYPES`` has a type
without a model here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from rumor import crdt
REPLICA_IDS = ("r0", "r1", "r2", "r3", "r4")

# Small pools make collisions (same element, same field, equal timestamps) common, which is where bugs live.
# Elements equal under Python's == but of different types (1, 1.0, True, -0.0 vs 0.0) are in on purpose: ORSet
# keys them type-strictly (crdt.plain_value.StrictKey), which
# test_laws.test_regression_orset_merge_order_picks_the_type_of_equal_elements pins.
ELEMENTS: list[Any] = [
    0, 1, 2, -7, 2**70, "a", "b", "", b"x", None, 2.5, 1.0, True, -0.0, 0.0, (1, "a"), (True, "a"), (),
]
VALUES: list[Any] = [*ELEMENTS, [1, 2], [], {"k": 1}, {"k": [None]}, True]
FIELDS = ["f", "g", "h"]
element = st.sampled_from([0, "a"]) | st.sampled_from(ELEMENTS)  # half the draws from two hot elements
value = st.sampled_from(VALUES)
ctx_flag = st.booleans()
ms = st.integers(0, 6)


@dataclass
class Env:
    """What one replica keeps besides its state: its id, its HLC and the context of its last read."""

    replica: str
    last_ts: crdt.HLCTimestamp | None = None
    snapshot: crdt.CausalContext | None = None

    def ts(self, physical_ms: int) -> crdt.HLCTimestamp:
        self.last_ts = crdt.HLCTimestamp.now(self.last_ts, physical_ms)
        return self.last_ts

    def ctx(self, flag: bool) -> crdt.CausalContext | None:
        return self.snapshot.copy() if flag and self.snapshot is not None else None


@dataclass(frozen=True)
class Model:
    type_name: str
    class_name: str
    ops: st.SearchStrategy[tuple[Any, ...]]
    apply: Callable[[Any, Env, tuple[Any, ...]], Any]

    @property
    def cls(self) -> type:
        return getattr(crdt, self.class_name)


# ------------------------------------------------------------------------------------------------ per-type ops


def _counter_apply(s: Any, env: Env, op: tuple[Any, ...]) -> Any:
    if op[0] == "inc":
        return s.increment(env.replica, op[1])
    if op[0] == "dec":
        return s.decrement(env.replica, op[1])
    if op[0] == "op":  # an increment naming its request: the same op_id on several replicas counts once
        return s.increment_op(env.replica, op[1], op[2], op[3])
    if op[0] == "fold":
        return s.fold_ops(env.replica, op[1], op[2])
    return s.clear(env.ctx(op[1]))


_amount = st.integers(1, 4) | st.just(2**64 + 3)
GCOUNTER_OPS = st.tuples(st.just("inc"), _amount) | st.tuples(st.just("clear"), ctx_flag)
PNCOUNTER_OPS = (
    st.tuples(st.just("inc"), _amount | st.integers(-4, -1))
    | st.tuples(st.just("dec"), _amount)
    | st.tuples(st.just("clear"), ctx_flag)
)
#: op-keyed increments (``crdt.counter_ops``): a small pool of op_ids, so replicas often apply the same one; an
#: op's amount follows from its id (a retry repeats its request); folds by age (ms) and by count (keep)
OP_IDS = ("x", "y", "z")
OP_AMOUNTS = {"x": 3, "y": 2**64 + 1, "z": 1}
_op_increment = st.sampled_from(OP_IDS).flatmap(
    lambda op_id: st.tuples(st.just("op"), st.just(op_id), st.just(OP_AMOUNTS[op_id]), ms))
_fold = st.tuples(st.just("fold"), st.integers(0, 7), st.integers(0, 2))
TOP_GCOUNTER_OPS = GCOUNTER_OPS | _op_increment | _fold
TOP_PNCOUNTER_OPS = PNCOUNTER_OPS | _op_increment | _op_increment.map(lambda op: (*op[:2], -op[2], op[3])) | _fold


def _orset_apply(s: Any, env: Env, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "add":
        return s.add(env.replica, op[1])
    if kind == "add_all":
        return s.add_all(env.replica, op[1])
    if kind == "remove":
        return s.remove(op[1], env.ctx(op[2]))
    if kind == "remove_all":
        return s.remove_all(op[1], env.ctx(op[2]))
    return s.clear(env.ctx(op[1]))


ORSET_OPS = st.one_of(
    st.tuples(st.just("add"), element),
    st.tuples(st.just("add_all"), st.lists(element, max_size=3).map(tuple)),
    st.tuples(st.just("remove"), element, ctx_flag),
    st.tuples(st.just("remove_all"), st.lists(element, max_size=3).map(tuple), ctx_flag),
    st.tuples(st.just("clear"), ctx_flag),
)


def _lwwregister_apply(s: Any, env: Env, op: tuple[Any, ...]) -> Any:
    if op[0] == "write":
        return s.write(env.replica, op[1], env.ts(op[2]), env.ctx(op[3]))
    return s.clear(env.ctx(op[1]))


LWWREGISTER_OPS = st.tuples(st.just("write"), value, ms, ctx_flag) | st.tuples(st.just("clear"), ctx_flag)


def _mvregister_apply(s: Any, env: Env, op: tuple[Any, ...]) -> Any:
    if op[0] == "write":
        return s.write(env.replica, op[1], env.ctx(op[2]))
    return s.clear(env.ctx(op[1]))


MVREGISTER_OPS = st.tuples(st.just("write"), value, ctx_flag) | st.tuples(st.just("clear"), ctx_flag)


def _lwwmap_apply(s: Any, env: Env, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "set":
        return s.set(env.replica, op[1], op[2], env.ts(op[3]), env.ctx(op[4]))
    if kind == "set_all":
        return s.set_all(env.replica, op[1], env.ts(op[2]), env.ctx(op[3]))
    if kind == "remove":
        return s.remove(op[1], env.ctx(op[2]))
    if kind == "remove_all":
        return s.remove_all(op[1], env.ctx(op[2]))
    return s.clear(env.ctx(op[1]))


LWWMAP_OPS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), value, ms, ctx_flag),
    st.tuples(st.just("set_all"), st.dictionaries(st.sampled_from(FIELDS), value, max_size=3).map(
        lambda fields: tuple(fields.items())), ms, ctx_flag),
    st.tuples(st.just("remove"), st.sampled_from(FIELDS), ctx_flag),
    st.tuples(st.just("remove_all"), st.lists(st.sampled_from(FIELDS), max_size=3, unique=True).map(tuple), ctx_flag),
    st.tuples(st.just("clear"), ctx_flag),
)

# ORMap keys are bound to one nested kind each (using a key with another kind is a TypeMismatchError).
ORMAP_KEY_KINDS = {
    "n": "gcounter", "p": "pncounter", "s": "orset", "l": "lwwregister", "v": "mvregister", "w": "lwwmap",
    "m": "ormap",
}


def _ormap_apply(s: Any, env: Env, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "update":
        key, nested_op = op[1], op[2]
        nested = MODELS[ORMAP_KEY_KINDS[key]]
        return s.update(env.replica, key, nested.cls, lambda cur: nested.apply(cur, env, nested_op))
    if kind == "remove":
        return s.remove(op[1], env.ctx(op[2]))
    return s.clear(env.ctx(op[1]))


def _ormap_ops(depth: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """Ops on an ORMap; an ``"m"`` key nests one more ORMap (two levels at most, to keep states small)."""
    simple = {k: kind for k, kind in ORMAP_KEY_KINDS.items() if kind != "ormap"}
    nested_ops = {
        "gcounter": GCOUNTER_OPS, "pncounter": PNCOUNTER_OPS, "orset": ORSET_OPS, "lwwregister": LWWREGISTER_OPS,
        "mvregister": MVREGISTER_OPS, "lwwmap": LWWMAP_OPS,
    }
    updates = [st.tuples(st.just("update"), st.just(k), nested_ops[kind]) for k, kind in simple.items()]
    if depth > 0:
        updates.append(st.tuples(st.just("update"), st.just("m"), _ormap_ops(depth - 1)))
    keys = st.sampled_from(sorted(simple) + (["m"] if depth > 0 else []))
    return st.one_of(
        *updates,
        st.tuples(st.just("remove"), keys, ctx_flag),
        st.tuples(st.just("clear"), ctx_flag),
    )


MODELS: dict[str, Model] = {
    m.type_name: m
    for m in (
        Model("gcounter", "GCounter", TOP_GCOUNTER_OPS, _counter_apply),
        Model("pncounter", "PNCounter", TOP_PNCOUNTER_OPS, _counter_apply),
        Model("orset", "ORSet", ORSET_OPS, _orset_apply),
        Model("lwwregister", "LWWRegister", LWWREGISTER_OPS, _lwwregister_apply),
        Model("mvregister", "MVRegister", MVREGISTER_OPS, _mvregister_apply),
        Model("lwwmap", "LWWMap", LWWMAP_OPS, _lwwmap_apply),
        Model("ormap", "ORMap", _ormap_ops(1), _ormap_apply),
    )
}


def registered_types() -> dict[str, type]:
    """``crdt.TYPES`` as a plain dict."""
    return dict(crdt.TYPES)


def registered_type_names() -> list[str]:
    """Types to run the suites on: every registered one."""
    return sorted(crdt.TYPES)


# ------------------------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    type_name: str
    replicas: int
    steps: tuple[tuple[Any, ...], ...]


@st.composite
def scenarios(draw: st.DrawFn, type_name: str, max_steps: int = 18, min_replicas: int = 2) -> Scenario:
    n = draw(st.integers(min_replicas, 5))
    idx = st.integers(0, n - 1)
    step = st.one_of(
        st.tuples(st.just("mut"), idx, MODELS[type_name].ops),
        st.tuples(st.just("mut"), idx, MODELS[type_name].ops),
        st.tuples(st.just("merge"), idx, idx),
        st.tuples(st.just("read"), idx),
    )
    return Scenario(type_name, n, tuple(draw(st.lists(step, max_size=max_steps))))


@dataclass
class Replay:
    """The outcome of a scenario replayed with full-state merges: replica states plus every delta made."""

    scenario: Scenario
    states: list[Any]
    envs: list[Env]
    deltas: list[tuple[int, Any]] = field(default_factory=list)  # (origin replica, delta) in generation order

    @property
    def model(self) -> Model:
        return MODELS[self.scenario.type_name]

    def empty(self) -> Any:
        return self.model.cls()

    def joined(self) -> Any:
        """The join of every replica's state: what the cluster converges to."""
        acc = self.empty()
        for s in self.states:
            acc.merge(s.copy())
        return acc


def replay(scenario: Scenario) -> Replay:
    model = MODELS[scenario.type_name]
    cls = model.cls
    r = Replay(scenario, [cls() for _ in range(scenario.replicas)],
               [Env(REPLICA_IDS[i]) for i in range(scenario.replicas)])
    for step in scenario.steps:
        i = step[1]
        if step[0] == "mut":
            delta = model.apply(r.states[i], r.envs[i], step[2])
            r.states[i].merge(delta)
            r.deltas.append((i, delta))
        elif step[0] == "merge":
            r.states[i].merge(r.states[step[2]].copy())
        else:
            r.envs[i].snapshot = r.states[i].context()
    return r


def replays(type_name: str, **kwargs: Any) -> st.SearchStrategy[Replay]:
    return scenarios(type_name, **kwargs).map(replay)
