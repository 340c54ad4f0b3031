"""The node's write invariant, under hypothesis: a state changes only by the join of a delta that has encoded.

- A local update that fails, for whatever reason (here: values poisoned past validation so that encoding the delta
  fails, or the mutator itself fails), leaves every state byte-identical and makes no key.
- An update that succeeds changes exactly its key, to the old state joined with the delta handed to listeners
  (the bytes that storage logs and replication gossips): nothing reaches the state that those bytes do not carry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.crdt import decode, encode
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.updates import Clear, Increment, MapChange, MVRegisterWrite, RegisterWrite, SetChange, Update, new_state

KEYS = ("a", "b", "c")
TEXT = st.text(alphabet="xyz", max_size=2)


def _poison(update: Update, field: str, value: Any) -> Update:
    """Puts `value` into a built (validated) update, as a bug between the edge and the keyspace could."""
    object.__setattr__(update, field, value)
    return update


def _updates() -> st.SearchStrategy[tuple[Update, bool]]:
    """(update, poisoned): valid updates of every type, and poisoned ones whose delta cannot encode or be made."""
    valid = st.one_of(
        st.integers(-3, 3).filter(bool).map(lambda n: Increment(amount=n)),
        st.lists(TEXT, min_size=1, max_size=3).map(lambda xs: SetChange(add=tuple(dict.fromkeys(xs)))),
        st.lists(TEXT, min_size=1, max_size=2).map(lambda xs: SetChange(remove=tuple(dict.fromkeys(xs)))),
        TEXT.map(lambda v: RegisterWrite(value=v)),
        TEXT.map(lambda v: MVRegisterWrite(value=v)),
        st.dictionaries(TEXT, TEXT, min_size=1, max_size=2).map(lambda d: MapChange(set=tuple(sorted(d.items())))),
        st.just(Clear()),
    )
    poisoned = st.one_of(
        st.just(None).map(lambda _: _poison(RegisterWrite(value="v"), "value", "\ud800")),
        st.just(None).map(lambda _: _poison(MVRegisterWrite(value="v"), "value", ["ok", "\udfff"])),
        st.just(None).map(lambda _: _poison(SetChange(add=("ok",)), "add", ("ok", "\ud800"))),
        st.just(None).map(lambda _: _poison(MapChange(set=(("f", 1),)), "set", (("f", 1), ("g\ud800", 2)))),
        st.just(None).map(lambda _: _poison(RegisterWrite(value="v"), "value", object())),
        st.just(None).map(lambda _: _poison(Increment(amount=1), "amount", "1")),
    )
    return st.one_of(valid.map(lambda u: (u, False)), poisoned.map(lambda u: (u, True)))


def _snapshot(node: Node) -> dict[str, bytes]:
    return {key: encode(node.keyspace.entry(key).state) for key in node.keyspace}  # type: ignore[union-attr]


async def _run(steps: list[tuple[str, tuple[Update, bool]]]) -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        handed: list[tuple[str, bytes | None]] = []
        node.keyspace.subscribe(lambda key, _type, _delta, blob: handed.append((key, blob)))
        for key, (update, poisoned) in steps:
            before = _snapshot(node)
            handed.clear()
            try:
                await node.update(key, update)
            except Exception:
                assert _snapshot(node) == before, f"a failed {update!r} changed a state"
                assert not handed
                continue
            assert not poisoned, f"{update!r} should not have been applied"
            after = _snapshot(node)
            assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}
            if not handed:  # nothing changed and no key was made (a remove of what was never there)
                assert after == before
                continue
            ((listened_key, blob),) = handed
            assert listened_key == key and blob is not None
            expected = decode(before[key]) if key in before else new_state(node.keyspace.type_of(key) or "")
            expected.merge(decode(blob))
            assert after[key] == encode(expected)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(KEYS), _updates()), max_size=12))
def test_a_state_changes_only_by_a_delta_that_encoded(steps: list[tuple[str, tuple[Update, bool]]]) -> None:
    asyncio.run(_run(steps))
