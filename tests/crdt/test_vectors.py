"""Golden vectors guard the wire format: fixed op sequences, their encodings pinned as hex in
``tests/vectors/crdt/vectors.json`` (version 2, what is written) and ``tests/vectors/crdt/v1.json`` (version 1,
frozen: what the previous release wrote, which data directories and older peers still hold).

The test rebuilds every vector and demands the pinned version-2 bytes, and decodes the pinned bytes of both
versions back to an equal state. A change to the encoding therefore fails here first; if it is intended (a new
VERSION, an append to a type enum), regenerate the version-2 file and review the diff (v1.json is never
regenerated):

    .venv/bin/python tests/crdt/test_vectors.py --regenerate
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rumor import crdt
from rumor.crdt import (
    CausalContext,
    CausalDelivery,
    GCounter,
    HLCTimestamp,
    LWWMap,
    LWWRegister,
    MVRegister,
    OpEmitter,
    ORMap,
    ORSet,
    PNCounter,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "crdt" / "vectors.json"
V1_VECTORS = VECTORS.with_name("v1.json")


def applied(state: Any, *deltas: Any) -> Any:
    for d in deltas:
        state.merge(d)
    return state


def run(state: Any, *mutations: Callable[[Any], Any]) -> Any:
    """Apply each mutation (state -> delta) in turn, generate-then-apply, as a replica does."""
    for m in mutations:
        state.merge(m(state))
    return state


def ts(wall: int, logical: int = 0) -> HLCTimestamp:
    return HLCTimestamp(wall, logical)


# ------------------------------------------------------------------------------------------------ builders


def gcounter_two_replicas() -> Any:
    return run(GCounter(), lambda s: s.increment("r0", 1), lambda s: s.increment("r1", 5),
               lambda s: s.increment("r0", 2))


def gcounter_big() -> Any:
    return run(GCounter(), lambda s: s.increment("r0", 2**70), lambda s: s.increment("r1", 2**64 - 1))


def pncounter_mixed() -> Any:
    return run(PNCounter(), lambda s: s.increment("r0", 10), lambda s: s.decrement("r1", 3),
               lambda s: s.increment("r1", -4), lambda s: s.increment("r0", 1))


def orset_elements() -> Any:
    """One element of every plain kind a set may hold."""
    return run(ORSet(), lambda s: s.add_all("r0", [1, -7, 2**70, "a", b"x", None, 2.5, False, (1, "t"), ()]))


def orset_add_remove_readd() -> Any:
    a, b = ORSet(), ORSet()
    run(a, lambda s: s.add("r0", "x"), lambda s: s.add("r0", "y"))
    b.merge(a)
    run(a, lambda s: s.remove("x"))
    run(b, lambda s: s.add("r1", "x"))  # concurrent re-add: wins
    return applied(a, b)


def orset_single_add_delta() -> Any:
    s = run(ORSet(), lambda s: s.add("r0", "x"))
    return s.add("r0", "y")


def orset_gap_context() -> Any:
    """Deltas received out of order leave a dot cloud in the context."""
    src = ORSet()
    deltas = []
    for e in ("a", "b", "c"):
        d = src.add("r0", e)
        src.merge(d)
        deltas.append(d)
    return applied(ORSet(), deltas[0], deltas[2])


def lwwregister_concurrent() -> Any:
    a, b = LWWRegister(), LWWRegister()
    run(a, lambda s: s.write("r0", "a", ts(100)))
    run(b, lambda s: s.write("r1", {"k": [1, None]}, ts(100)))  # same timestamp: replica id breaks the tie
    return applied(a, b)


def lwwregister_causal_overwrite() -> Any:
    a = run(LWWRegister(), lambda s: s.write("r0", "late clock", ts(500)))
    b = applied(LWWRegister(), a)
    return run(b, lambda s: s.write("r1", "follows", ts(10)))  # causally later wins despite the lower clock


def mvregister_siblings() -> Any:
    a, b = MVRegister(), MVRegister()
    run(a, lambda s: s.write("r0", [1, 2]))
    run(b, lambda s: s.write("r1", "other"))
    return applied(a, b)


def lwwmap_fields() -> Any:
    m = run(LWWMap(), lambda s: s.set("r0", "name", "ann", ts(5)), lambda s: s.set("r0", "age", 41, ts(6)),
            lambda s: s.set("r1", "name", "bob", ts(7)), lambda s: s.remove("age"))
    return m


def ormap_nested() -> Any:
    return run(
        ORMap(),
        lambda s: s.update("r0", "hits", GCounter, lambda c: c.increment("r0", 3)),
        lambda s: s.update("r1", "tags", ORSet, lambda t: t.add("r1", "red")),
        lambda s: s.update("r0", "tags", ORSet, lambda t: t.add("r0", "blue")),
        lambda s: s.update("r0", "who", LWWRegister, lambda r: r.write("r0", "me", ts(9))),
        lambda s: s.update("r1", "deep", ORMap,
                           lambda m: m.update("r1", "n", PNCounter, lambda c: c.decrement("r1", 2))),
        lambda s: s.remove("who"),
    )


def empty_states() -> list[tuple[str, Any]]:
    return [(f"{cls.TYPE_NAME}_empty", cls()) for cls in (GCounter, PNCounter, ORSet, LWWRegister, MVRegister,
                                                          LWWMap, ORMap)]


STATES: dict[str, Callable[[], Any]] = {
    "gcounter_two_replicas": gcounter_two_replicas,
    "gcounter_big": gcounter_big,
    "pncounter_mixed": pncounter_mixed,
    "orset_elements": orset_elements,
    "orset_add_remove_readd": orset_add_remove_readd,
    "orset_single_add_delta": orset_single_add_delta,
    "orset_gap_context": orset_gap_context,
    "lwwregister_concurrent": lwwregister_concurrent,
    "lwwregister_causal_overwrite": lwwregister_causal_overwrite,
    "mvregister_siblings": mvregister_siblings,
    "lwwmap_fields": lwwmap_fields,
    "ormap_nested": ormap_nested,
    **{name: (lambda s=s: s.copy()) for name, s in empty_states()},
}


def context_vector() -> CausalContext:
    return CausalContext([("r0", 1), ("r0", 2), ("r0", 5), ("r1", 1), ("r2", 3)])


def op_second_add() -> bytes:
    delivery = CausalDelivery()
    emitter = OpEmitter("r0", delivery)
    s = ORSet()
    for e in ("a", "b"):
        d = s.add("r0", e)
        s.merge(d)
        op = emitter.emit(d)
    return crdt.encode_op(op)


def build() -> dict[str, str]:
    out = {name: crdt.encode(make()).hex() for name, make in STATES.items()}
    out["context_with_cloud"] = crdt.encode_context(context_vector()).hex()
    out["op_orset_second_add"] = op_second_add().hex()
    return out


def load(path: Path = VECTORS) -> dict[str, str]:
    return json.loads(path.read_text())["vectors"]


# ------------------------------------------------------------------------------------------------ tests


def test_vector_file_covers_every_registered_type_and_every_builder() -> None:
    pinned = load()
    assert set(pinned) == set(build())
    decoded_types = {crdt.decode(bytes.fromhex(pinned[name])).TYPE_NAME for name in STATES}
    assert decoded_types == set(crdt.TYPES)


@pytest.mark.parametrize("name", sorted(STATES))
def test_state_encodes_to_the_pinned_bytes_and_decodes_back(name: str) -> None:
    pinned = bytes.fromhex(load()[name])
    state = STATES[name]()
    assert crdt.encode(state) == pinned, f"wire format of {name} changed; see module docstring to regenerate"
    back = crdt.decode(pinned)
    assert back == state
    assert back.value() == state.value()


def test_context_and_op_vectors() -> None:
    pinned = load()
    ctx_bytes = bytes.fromhex(pinned["context_with_cloud"])
    assert crdt.encode_context(context_vector()) == ctx_bytes
    assert crdt.decode_context(ctx_bytes) == context_vector()
    op_bytes = bytes.fromhex(pinned["op_orset_second_add"])
    assert op_second_add() == op_bytes
    op = crdt.decode_op(op_bytes)
    assert (op.dot, dict(op.deps.items()), op.type_name, op.delta.value()) == (("r0", 2), {"r0": 1}, "orset",
                                                                                 frozenset({"b"}))


@pytest.mark.parametrize("name", sorted(STATES))
def test_version_1_bytes_still_decode_to_the_same_state(name: str) -> None:
    """A data directory or a peer of the previous release holds version-1 bytes: they read as they always did,
    and what this version writes of them is the version-2 encoding of the same state."""
    back = crdt.decode(bytes.fromhex(load(V1_VECTORS)[name]))
    assert back == STATES[name]()
    assert crdt.encode(back) == bytes.fromhex(load()[name])


def test_version_1_context_and_op_still_decode() -> None:
    pinned = load(V1_VECTORS)
    assert crdt.decode_context(bytes.fromhex(pinned["context_with_cloud"])) == context_vector()
    op = crdt.decode_op(bytes.fromhex(pinned["op_orset_second_add"]))
    assert crdt.encode_op(op) == op_second_add()
    assert set(pinned) == set(load())


def test_pinned_values_read_as_documented() -> None:
    """The vectors also pin semantics a reader can check by eye."""
    pinned = {name: crdt.decode(bytes.fromhex(h)) for name, h in load().items() if name in STATES}
    assert all(bytes.fromhex(h)[:2] == bytes((crdt.encoding.MAGIC, crdt.encoding.VERSION)) for h in load().values())
    assert pinned["gcounter_two_replicas"].value() == 8
    assert pinned["gcounter_big"].value() == 2**70 + 2**64 - 1
    assert pinned["pncounter_mixed"].value() == 4
    assert pinned["orset_add_remove_readd"].value() == frozenset({"x", "y"})
    assert pinned["orset_gap_context"].value() == frozenset({"a", "c"})
    assert pinned["lwwregister_concurrent"].value() == {"k": [1, None]}
    assert pinned["lwwregister_causal_overwrite"].value() == "follows"
    assert sorted(map(repr, pinned["mvregister_siblings"].value())) == sorted(map(repr, [[1, 2], "other"]))
    assert pinned["lwwmap_fields"].value() == {"name": "bob"}
    assert pinned["ormap_nested"].value() == {"deep": {"n": -2}, "hits": 3, "tags": frozenset({"red", "blue"})}


def regenerate() -> None:
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "about": "rumor crdt golden vectors: hex of crdt.encode / encode_context / encode_op for the fixed op "
                 "sequences in tests/crdt/test_vectors.py. Regenerate: python tests/crdt/test_vectors.py --regenerate",
        "vectors": build(),
    }
    VECTORS.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(doc['vectors'])} vectors to {VECTORS}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(__doc__)
    regenerate()
