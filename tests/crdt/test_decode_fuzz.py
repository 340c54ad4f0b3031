"""Decoding treats its input as hostile: whatever the bytes, only ``crdt.DecodeError`` escapes, and anything that
does decode is a valid state (re-encodes to the same bytes, merges, reads, clears without error).

Inputs: random bytes; valid encodings (states, deltas, contexts, ops from replayed histories) that are
bit-flipped, truncated, extended, spliced or have bytes deleted; valid encodings whose msgpack tree has one node
replaced by arbitrary msgpack data (reaches the semantic checks behind the msgpack layer: dots not covered by the
context, negative counters, wrong shapes, unhashable set elements ...); and oversized / deeply nested input.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from crdt_strategies import registered_type_names, replays
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from rumor import crdt
from rumor.crdt import wire_v1

TYPE_NAMES = registered_type_names()


V2_HEADER = bytes((crdt.encoding.MAGIC, crdt.encoding.VERSION, 0))


def encoder_of(blob: bytes, v2: Callable[[Any], bytes], v1: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """The encoder of ``blob``'s version: what decodes must re-encode to the same bytes in the version it came in
    (a compressed body is canonical once inflated: compare the inflated bytes)."""
    return v2 if blob[:1] == V2_HEADER[:1] else v1


def inflated(blob: bytes) -> bytes:
    if blob[:3] == bytes((crdt.encoding.MAGIC, crdt.encoding.VERSION, crdt.encoding.FLAG_ZLIB)):
        return V2_HEADER + zlib.decompress(blob[3:])
    return blob


def check_decoded(state: Any, blob: bytes) -> None:
    """A decoded state must behave: canonical bytes, and every operation the API offers works on it."""
    assert encoder_of(blob, crdt.encode, wire_v1.encode)(state) == inflated(blob)
    cls = type(state)
    assert crdt.TYPES[state.TYPE_NAME] is cls
    copy = state.copy()
    assert copy == state
    copy.merge(state)
    assert copy == state
    empty = cls()
    empty.merge(state)
    assert empty == state
    state.value()
    state.is_empty()
    state.context()
    cleared = state.copy()
    cleared.merge(state.clear())
    assert cleared.is_empty()


def outcome(label: str) -> None:
    """Tally what the decoder did (see ``--hypothesis-show-statistics``): the fuzz must reach deep checks."""
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test there is nothing to tally
        event(label)


def attempt(blob: bytes) -> None:
    """Feed ``blob`` to every decoder; each may refuse it with DecodeError only."""
    try:
        state = crdt.decode(blob)
    except crdt.DecodeError as exc:
        outcome(f"decode refused: {str(exc).split(':')[0][:40]}")
    else:
        outcome("decoded")
        check_decoded(state, blob)
    try:
        ctx = crdt.decode_context(blob)
    except crdt.DecodeError:
        pass
    else:
        assert encoder_of(blob, crdt.encode_context, wire_v1.encode_context)(ctx) == inflated(blob)
    try:
        op = crdt.decode_op(blob)
    except crdt.DecodeError:
        pass
    else:
        assert encoder_of(blob, crdt.encode_op, wire_v1.encode_op)(op) == inflated(blob)
        check_decoded(op.delta, crdt.encode(op.delta))


@st.composite
def valid_blobs(draw: st.DrawFn) -> bytes:
    """An encoding of something real: a replica state, a delta, a context or an op, in version 2 (sometimes
    compressed) or version 1."""
    r = draw(replays(draw(st.sampled_from(TYPE_NAMES)), max_steps=10))
    kind = draw(st.sampled_from(["state", "delta", "context", "op"]))
    v1 = draw(st.booleans())
    state = r.states[draw(st.integers(0, len(r.states) - 1))]
    if kind == "context":
        return (wire_v1.encode_context if v1 else crdt.encode_context)(state.context())
    if kind in ("delta", "op") and r.deltas:
        origin, delta = r.deltas[draw(st.integers(0, len(r.deltas) - 1))]
        if kind == "delta":
            return (wire_v1.encode if v1 else crdt.encode)(delta)
        emitter = crdt.OpEmitter(f"r{origin}", crdt.CausalDelivery())
        return (wire_v1.encode_op if v1 else crdt.encode_op)(emitter.emit(delta))
    if v1:
        return wire_v1.encode(state)
    if draw(st.booleans()):  # the compressed frame, forced even for small states: its checks must hold too
        return _DEFLATED + zlib.compress(crdt.encode(state)[3:])
    return crdt.encode(state)


_DEFLATED = bytes((crdt.encoding.MAGIC, crdt.encoding.VERSION, crdt.encoding.FLAG_ZLIB))


@st.composite
def mutated(draw: st.DrawFn, blob: bytes) -> bytes:
    data = bytearray(blob)
    how = draw(st.sampled_from(["flip", "truncate", "extend", "delete", "splice", "overwrite"]))
    if how == "flip" and data:
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=16))
    elif how == "delete" and data:
        i = draw(st.integers(0, len(data) - 1))
        del data[i : i + draw(st.integers(1, 4))]
    elif how == "splice":
        other = draw(valid_blobs())
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + other[draw(st.integers(0, len(other))) :]
    elif data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCF, 0xD3, 0xDC, 0xDD, 0xDF, 0xFF]))
    return bytes(data)


# Arbitrary msgpack data, including the ext types the codec uses (1: tuple, 2: big int) with junk inside.
msgpack_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=4),
    st.binary(max_size=4), st.sampled_from([0, 1, -1, 2**63, "r0", "r1", "orset", "gcounter", "ormap"]),
    st.builds(msgpack.ExtType, st.sampled_from([1, 2, 3]), st.binary(max_size=6)),
)
msgpack_tree = st.recursive(
    msgpack_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    max_leaves=12,
)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    return out


def replace_at(obj: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    obj[path[0]] = replace_at(obj[path[0]], path[1:], new)
    return obj


def get_at(obj: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        obj = obj[step]
    return obj


def tweaks(node: Any) -> st.SearchStrategy[Any]:
    """Small, plausible edits (off-by-one counters, another replica, a dropped/duplicated/reordered row):
    these pass the shape checks and hit the invariant checks (dot coverage, ordering, sign, compaction)."""
    if type(node) is int:
        edits = [node + 1, node - 1, 0, -node, -1, 2**64 - 1]
        return st.sampled_from([n for n in edits if -(2**63) <= n < 2**64])
    if type(node) is str:
        return st.sampled_from(["r0", "r1", "r9", "", node + "x"])
    if isinstance(node, list) and node:
        return st.sampled_from([node[1:], node[:-1], [*node, node[-1]], [node[0], *node], node[::-1], []])
    return msgpack_tree


# ------------------------------------------------------------------------------------------------ tests


@settings(max_examples=200)
@given(blob=st.binary(max_size=64))
def test_random_bytes_raise_only_decode_error(blob: bytes) -> None:
    attempt(blob)


@settings(max_examples=150)
@given(data=st.data())
def test_mutated_valid_encodings_raise_only_decode_error(data: st.DataObject) -> None:
    blob = data.draw(valid_blobs())
    attempt(blob)  # the original decodes (the checks hold for it too)
    attempt(data.draw(mutated(blob)))


@settings(max_examples=200)
@given(data=st.data())
def test_valid_envelopes_with_one_field_replaced_raise_only_decode_error(data: st.DataObject) -> None:
    """Well-formed msgpack, wrong content: exercises the semantic validation behind the msgpack layer."""
    blob = inflated(data.draw(valid_blobs()))
    header = blob[:3] if blob[:1] == V2_HEADER[:1] else b""
    tree = msgpack.unpackb(blob[len(header):], raw=False, strict_map_key=False)
    candidates = paths(tree)
    deep = [p for p in candidates if len(p) >= 3] or candidates
    path = data.draw(st.sampled_from(deep) | st.sampled_from(candidates))
    new = data.draw(tweaks(get_at(tree, path)) | msgpack_tree)
    attempt(header + msgpack.packb(replace_at(tree, path, new), use_bin_type=True))


@settings(max_examples=100)
@given(body=msgpack_tree, type_name=st.sampled_from([*TYPE_NAMES, "nope", ""]))
def test_random_bodies_in_a_valid_envelope_raise_only_decode_error(body: Any, type_name: str) -> None:
    attempt(msgpack.packb([1, type_name, body], use_bin_type=True))
    attempt(msgpack.packb([1, "op", "r0", 1, [], type_name, body], use_bin_type=True))
    fields = body if isinstance(body, list) else [body]
    attempt(V2_HEADER + msgpack.packb([type_name, *fields[:7], *[[]] * (7 - len(fields[:7]))], use_bin_type=True))
    attempt(V2_HEADER + msgpack.packb(["op", "r0", 1, [], [type_name, *fields[:7]]], use_bin_type=True))


def test_a_valid_state_is_accepted_whole_and_rejected_over_the_size_limit() -> None:
    s = crdt.ORSet()
    s.merge(s.add_all("r0", range(1000)))
    blob = crdt.encode(s)
    assert crdt.decode(blob, max_bytes=len(blob)) == s
    for decoder in (crdt.decode, crdt.decode_op, crdt.decode_context):
        with pytest.raises(crdt.DecodeError):
            decoder(blob, max_bytes=len(blob) - 1)
    with pytest.raises(crdt.DecodeError):
        crdt.decode(blob + b"\x00" * (64 * 1024 * 1024))  # over the 64 MiB default


def test_headers_that_promise_more_than_the_input_holds_are_rejected() -> None:
    for blob in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                 b"\x93\x01\xa5orset\xdd\x7f\xff\xff\xff"):
        attempt(blob)
        with pytest.raises(crdt.DecodeError):
            crdt.decode(blob)


@pytest.mark.parametrize("depth", [33, 200, 100_000])
def test_deeply_nested_input_is_rejected(depth: int) -> None:
    """Nested arrays (msgpack level) and nested tuple exts (codec level) deeper than max_depth."""
    raw = b"\x93\x01\xadlwwregister" + b"\x91" * depth + b"\xc0"
    with pytest.raises(crdt.DecodeError):
        crdt.decode(raw)
    value: Any = None
    for _ in range(min(depth, 300)):
        value = (value,)
    r = crdt.LWWRegister()
    try:
        r.merge(r.write("r0", value, crdt.HLCTimestamp(1, 0)))
        blob = crdt.encode(r)
    except crdt.CRDTError:
        return  # refused when written: fine, nothing too deep can then be produced
    with pytest.raises(crdt.DecodeError):
        crdt.decode(blob)


def test_nested_values_within_the_depth_limit_decode() -> None:
    value: Any = "leaf"
    for _ in range(20):
        value = [value]
    r = crdt.LWWRegister()
    r.merge(r.write("r0", value, crdt.HLCTimestamp(1, 0)))
    assert crdt.decode(crdt.encode(r)).value() == value
    with pytest.raises(crdt.DecodeError):
        crdt.decode(crdt.encode(r), max_depth=10)
