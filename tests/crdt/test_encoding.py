"""Encoding: deterministic bytes, round trips, and refusal of hostile input with DecodeError only."""

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumor.crdt import (
    TYPES,
    DecodeError,
    GCounter,
    HLCTimestamp,
    LWWRegister,
    MVRegister,
    ORSet,
    PNCounter,
    decode,
    decode_context,
    encode,
    encode_context,
    wire_v1,
)
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.lww_map import LWWMap


def sample_states() -> list[DotKernel[Any]]:
    s = ORSet()
    s.merge(s.add_all("A", [1, "x", (1, (2, b"z")), 2**80, None, -1.5]))
    s.merge(s.remove("x"))
    g = GCounter()
    g.merge(g.increment("B", 3))
    p = PNCounter()
    p.merge(p.increment("A", -(2**70)))
    r = LWWRegister()
    r.merge(r.write("A", {"z": [1, (2,)], "a": None}, HLCTimestamp(7, 1)))
    m = MVRegister()
    m.merge(m.write("A", [1]))
    return [s, g, p, r, m]


def test_round_trip_and_same_state_same_bytes() -> None:
    for state in sample_states():
        data = encode(state)
        back = decode(data)
        assert back == state
        assert encode(back) == data


def test_insertion_order_does_not_change_bytes() -> None:
    a, b = ORSet(), ORSet()
    da, db = a.add("A", "p"), b.add("B", "q")
    a.merge(da)
    a.merge(db)
    b.merge(db)
    b.merge(da)
    assert encode(a) == encode(b)


def test_registry_names_every_core_type() -> None:
    for name in ("gcounter", "pncounter", "orset", "lwwregister", "mvregister"):
        assert name == TYPES[name].TYPE_NAME


def test_context_round_trip() -> None:
    state = sample_states()[0]
    assert decode_context(encode_context(state.context())) == state.context()


def envelope(type_name: str, body: object) -> bytes:
    return msgpack.packb([1, type_name, body], use_bin_type=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x91" * 5000 + b"\x00",
        envelope("orset", [[[["A", 1]], []], [["A", [[2, "x", None]]]]]),  # dot not covered
        envelope("gcounter", [[[["A", 1]], []], [["A", [[1, "A", -1]]]]]),  # negative total
        envelope("gcounter", [[[["A", 1]], []], [["A", [[1, "B", 1]]]]]),  # keyed by another replica
        envelope("orset", [[[["A", 1]], []], [["A", [[1, ["list"], None]]]]]),  # unhashable element
        envelope("orset", [[[["B", 1], ["A", 1]], []], []]),  # unsorted vector
        envelope("orset", [[[["A", 1]], [["A", [2]]]], []]),  # uncompacted cloud
        envelope("nosuchtype", []),
        envelope("lwwregister", [[[["A", 1]], []], [["A", [[1, None, "bare"]]]]]),
        msgpack.packb([2, "orset", [[[], []], []]]),
        b"\x00" * 100,
    ],
)
def test_hostile_input_raises_decode_error_only(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_size_and_depth_limits() -> None:
    data = encode(sample_states()[0])
    with pytest.raises(DecodeError):
        decode(data, max_bytes=len(data) - 1)
    m = MVRegister()
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    m.merge(m.write("A", deep))
    with pytest.raises(DecodeError):
        decode(encode(m))
    assert decode(encode(m), max_depth=64) == m


def test_truncations_of_valid_bytes_are_rejected() -> None:
    data = encode(sample_states()[3])
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4) | st.binary(
    max_size=3)
plain_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids) | st.dictionaries(st.text(max_size=3), kids,
                                                                                      max_size=3),
    max_leaves=8,
)


@given(writes=st.lists(st.tuples(st.sampled_from(["A", "B"]), plain_values,
                                 st.integers(0, 2**70), st.integers(0, 2**70)), min_size=1, max_size=4))
def test_lww_timestamp_runs_round_trip_and_match_version_1(writes: list[tuple[str, object, int, int]]) -> None:
    """LWW payloads travel as timestamp runs (wall steps, big ones as ext ints) plus a value column: whatever the
    timestamps and values, both versions decode to the same state and version 2 re-encodes to its own bytes."""
    register, fields = LWWRegister(), LWWMap()
    deltas: list[DotKernel[Any]] = []
    for replica, value, wall, logical in writes:
        stamp = HLCTimestamp(wall, logical)
        register_delta, fields_delta = register.write(replica, value, stamp), fields.set(replica, "f", value, stamp)
        register.merge(register_delta)
        fields.merge(fields_delta)
        deltas += [register_delta, fields_delta]
    for state in [register, fields, *deltas]:
        blob = encode(state)
        assert decode(blob) == state == decode(wire_v1.encode(state))
        assert encode(decode(blob)) == blob
