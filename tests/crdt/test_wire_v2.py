"""Wire format version 2: its layout, its canonical form checked while building (each non-canonical variant of a
real encoding is refused), the runs bound that keeps hostile input from expanding, and compression."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
import pytest
from crdt_strategies import registered_type_names, replays
from hypothesis import event, given, settings
from hypothesis import strategies as st

from rumor import crdt
from rumor.crdt import (
    DecodeError,
    HLCTimestamp,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORSet,
    PNCounter,
    decode,
    encode,
    wire_v2,
)
from rumor.crdt.encoding import COMPRESS_ABOVE, FLAG_ZLIB, MAGIC, VERSION

HEADER = bytes((MAGIC, VERSION, 0))


def body_of(blob: bytes) -> Any:
    assert blob[:3] == HEADER
    return msgpack.unpackb(blob[3:], raw=False)


def framed(body: Any) -> bytes:
    return HEADER + msgpack.packb(body, use_bin_type=True)


def big_map(n: int, batch: int = 100) -> LWWMap:
    m = LWWMap()
    for b in range(0, n, batch):
        rows = ((f"k{i}", f"v{i}") for i in range(b, min(b + batch, n)))
        m.merge(m.set_all("A", rows, HLCTimestamp(1_700_000_000_000 + b, 0)))
    return m


def test_sequential_writes_are_one_run_and_a_batch_one_timestamp() -> None:
    m = big_map(1000)
    name, replicas, vector, cloud, groups, runs, columns, deferred = body_of(encode(m))
    assert (name, replicas, vector, cloud, deferred) == ("lwwmap", ["A"], [0, 1000], [], [])
    assert groups == [0, 1] and runs == [1, 1000]  # 1000 dots: two ints
    keys, stamps, values = columns
    assert keys[:2] == ["k0", "k1"] and values[-1] == "v999"
    assert stamps[:6] == [1_700_000_000_000, 0, 100, 100, 0, 100]  # [wall step, logical, length] per batch
    assert len(encode(m)) < 1000 * 14  # the two strings and little else


def test_gaps_make_runs_and_replicas_index_the_table() -> None:
    s = ORSet()
    s.merge(s.add_all("b", ["x", "y", "z"]))
    s.merge(s.remove("y"))
    s.merge(s.add("a", "w"))
    _, replicas, vector, _, groups, runs, columns, _ = body_of(encode(s))
    assert replicas == ["a", "b"] and vector == [0, 1, 1, 3]
    assert groups == [0, 1, 1, 2] and runs == [1, 1, 1, 1, 2, 1]  # a:1; b:1, then b:3 (gap 2)
    assert columns == [["w", "x", "z"]]


def variants(blob: bytes) -> list[tuple[str, bytes]]:
    """Non-canonical spellings of ``blob``'s state (same meaning where one exists): each must be refused."""
    body = body_of(blob)
    out = []

    def edited(what: str, index: int, value: Any) -> None:
        b = body_of(blob)
        b[index] = value
        out.append((what, framed(b)))

    edited("unused replica in the table", 1, [*body[1], "zzz"])
    edited("replica table unsorted", 1, body[1][::-1])
    runs = body[5]
    edited("a run split in two", 5, [runs[0], 1, 1, runs[1] - 1, *runs[2:]])
    edited("a run covering more than the context", 5, [runs[0], runs[1] + 1, *runs[2:]])
    edited("a run promising a billion entries", 5, [runs[0], 10 ** 9, *runs[2:]])
    stamps = body[6][1]
    edited("timestamp run split in two", 6, [body[6][0], [stamps[0], stamps[1], 1, 0, stamps[1], stamps[2] - 1,
                                                          *stamps[3:]], body[6][2]])
    edited("a deferred list that should be empty, holding an empty row", 7, [[[], [], None]])
    raw = blob[3:]
    out.append(("float32 for a float", HEADER + raw.replace(b"\xcb" + bytes(8), b"\xca" + bytes(4), 1)))
    out.append(("trailing byte", blob + b"\x00"))
    out.append(("version 3", bytes((MAGIC, 3, 0)) + raw))
    out.append(("unknown flag", bytes((MAGIC, VERSION, 2)) + raw))
    return [(what, b) for what, b in out if b != blob]


def test_every_non_canonical_variant_is_refused() -> None:
    m = big_map(300)
    m.merge(m.set("B", "k5", 0.0, HLCTimestamp(1, 0)))
    blob = encode(m)
    assert decode(blob) == m
    for what, bad in variants(blob):
        with pytest.raises(DecodeError):
            decode(bad)
            pytest.fail(f"accepted: {what}")


def test_non_minimal_msgpack_and_values_are_refused() -> None:
    r = LWWRegister()
    r.merge(r.write("A", {"a": (1, 2), "b": 2**70}, HLCTimestamp(5, 0)))
    blob = encode(r)
    assert decode(blob).value() == {"a": (1, 2), "b": 2**70}
    body = body_of(blob)
    wide = HEADER + blob[3:].replace(b"\x05", b"\xcf" + (5).to_bytes(8, "big"), 1)  # the wall as a uint64
    swapped = dict(reversed(list(body[6][1][0].items())))
    unsorted = framed([*body[:6], [body[6][0], [swapped]], body[7]])
    small_big = framed([*body[:6], [body[6][0], [{"a": body[6][1][0]["a"],
                                                   "b": msgpack.ExtType(2, b"+\x05")}]], body[7]])
    zero_led = framed([*body[:6], [body[6][0], [{"a": body[6][1][0]["a"],
                                                  "b": msgpack.ExtType(2, b"+\x00" + (2**70).to_bytes(9, "big"))}]],
                       body[7]])
    loose_tuple = framed([*body[:6], [body[6][0], [{"a": msgpack.ExtType(1, b"\x92\xd0\x01\x02"),
                                                    "b": body[6][1][0]["b"]}]], body[7]])
    for bad in (wide, unsorted, small_big, zero_led, loose_tuple):
        assert bad != blob
        with pytest.raises(DecodeError):
            decode(bad)


def test_compression_pays_only_for_big_states_and_round_trips() -> None:
    m = big_map(5000)
    plain, packed = encode(m), encode(m, compress=True)
    assert packed[:3] == bytes((MAGIC, VERSION, FLAG_ZLIB)) and len(packed) < len(plain) // 2
    assert decode(packed) == m == decode(plain)
    small = PNCounter()
    small.merge(small.increment("A", 3))
    assert len(encode(small)) < COMPRESS_ABOVE and encode(small, compress=True) == encode(small)


def test_hostile_compressed_bodies_are_refused() -> None:
    blob = encode(big_map(2000), compress=True)
    deflated = bytes((MAGIC, VERSION, FLAG_ZLIB))
    bomb = deflated + zlib.compress(b"\x00" * (8 * 1024 * 1024), 9)
    with pytest.raises(DecodeError, match="limit"):
        decode(bomb, max_bytes=1024 * 1024)  # 8 KiB that would inflate to 8 MiB: stopped at the limit
    for bad in (blob[:-5], blob + b"junk", deflated + b"not zlib at all",
                deflated + zlib.compress(msgpack.packb(["lwwmap", [], [], [], [], [], [[], [], []], []]) + b"\x00")):
        with pytest.raises(DecodeError):
            decode(bad)
    with pytest.raises(DecodeError, match="limit"):
        decode(blob, max_bytes=len(blob) + 10)  # small enough compressed, too big once inflated


def test_every_type_round_trips_with_deferred_removes_and_clouds() -> None:
    s, other = ORSet(), ORSet()
    other.merge(other.add("B", "seen-elsewhere"))
    s.merge(s.add("A", "x"))
    s.merge(s.remove("seen-elsewhere", context=other.context()))  # deferred: the add has not arrived
    gap = ORSet()
    src = ORSet()
    deltas = []
    for e in "abc":
        d = src.add("C", e)
        src.merge(d)
        deltas.append(d)
    gap.merge(deltas[2])  # a cloud dot
    mv = MVRegister()
    mv.merge(mv.write("A", [1, {"z": None}]))
    for state in (s, gap, mv):
        blob = encode(state)
        assert decode(blob) == state and encode(decode(blob)) == blob
    assert body_of(encode(s))[7] != []


def test_ops_and_contexts_are_version_2() -> None:
    ctx = crdt.CausalContext([("A", 1), ("A", 3), ("B", 2)])
    blob = crdt.encode_context(ctx)
    assert body_of(blob) == ["ctx", ["A", 1], ["A", 1, 3, "B", 1, 2]]
    assert crdt.decode_context(blob) == ctx
    with pytest.raises(DecodeError):
        crdt.decode_context(framed(["ctx", ["A", 1], ["A", 1, 2]]))  # uncompacted: A:2 belongs in the vector


@settings(max_examples=100)
@given(data=st.data())
def test_the_one_entry_fast_path_gives_the_general_layout(data: st.DataObject) -> None:
    """Every mutator's delta (and every state) of every type: ``_one_entry_body``, where it applies, builds exactly
    what the general column builder does."""
    replay = data.draw(replays(data.draw(st.sampled_from(registered_type_names())), max_steps=8))
    for state in [d for _, d in replay.deltas] + replay.states:
        fast = wire_v2.state_body(state)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(wire_v2, "_one_entry_body", lambda _state: None)
            assert wire_v2.state_body(state) == fast


# -- the one-run fast path reads exactly what the general path reads --------------------------------------------------

_near = st.one_of(st.integers(-2, 6), st.sampled_from([True, 0.0, "a", None]))
_other = st.one_of(_near, st.lists(_near, max_size=3), st.lists(st.sampled_from(["a", "b", 0, b"a"]), max_size=2))


@st.composite
def _near_one_run(draw: st.DrawFn) -> tuple[Any, ...]:
    """The one-run shape's five fields, and often one field, or one item of one, swapped for something else (a
    counter out of range, another type, another length); the test's ``limit`` is near the run's length."""
    top = draw(st.integers(1, 5))
    start = draw(st.integers(1, top))
    length = draw(st.integers(1, top - start + 1))
    fields: list[Any] = [["a"], [0, top], [], [0, 1], [start, length]]
    swap = draw(st.integers(0, 15))
    if swap < 5:
        fields[swap] = draw(_other)
    elif swap < 8 and fields[swap - 4]:
        at = draw(st.integers(0, len(fields[swap - 4]) - 1))
        fields[swap - 4] = [*fields[swap - 4][:at], draw(_near), *fields[swap - 4][at + 1:]]
    return tuple(fields)


@settings(max_examples=500)
@given(_near_one_run(), st.integers(-1, 3))
def test_the_one_run_shape_is_read_as_the_general_path_reads_it(fields: tuple[Any, ...], slack: int) -> None:
    runs = fields[4]
    limit = max(0, (runs[1] if type(runs) is list and len(runs) == 2 and type(runs[1]) is int else 2) + slack)
    fast = wire_v2.one_run_dots(*fields, limit)
    event(f"fast path read it: {fast is not None}")
    if fast is None:
        return  # the general path decides (and is what every other test of this module exercises)
    ctx, dots = wire_v2.context_and_dots(*fields, limit)  # never raises on what the fast path read
    assert fast[0] == ctx and fast[1] == dots


def test_every_small_state_takes_the_one_run_path() -> None:
    """A key's first writes by one replica (a counter's increment, a set's adds, a register's value) are the shape
    the fast path reads; a second replica's write is not."""
    counter, names = PNCounter(), ORSet()
    counter.merge(counter.increment("r", 3))
    names.merge(names.add_all("r", ["x", "y"]))
    register = LWWRegister()
    register.merge(register.write("r", "v", HLCTimestamp(5, 0)))
    for state in (counter, names, register):
        body = body_of(encode(state))
        assert wire_v2.one_run_dots(*body[1:6], 2) is not None
        assert encode(decode(encode(state))) == encode(state)
    names.merge(names.add("s", "z"))
    assert wire_v2.one_run_dots(*body_of(encode(names))[1:6], 3) is None
