"""Delta buffer: joins per key, never echoes to the origin, batches within the byte limit, bounded backlog."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.delta_buffer import (
    DELTA_BATCH_MESSAGE_TYPE,
    DeltaBuffer,
    decode_delta_batch,
    encode_delta_batch,
    entry_wire_bytes,
)
from gossip.errors import GossipError, PacketDecodeError


def union(a: bytes, b: bytes) -> bytes:
    """Join of grow-only sets encoded as sorted comma-separated elements."""
    return b",".join(sorted(set(a.split(b",")) | set(b.split(b","))))


def batch(buffer: DeltaBuffer, peer: str, limit: int = 1400) -> dict[bytes, bytes]:
    message = buffer.take_batch(peer, limit)
    return {} if message is None else dict(decode_delta_batch(message))


def test_repeated_updates_of_a_key_are_joined_into_one_delta() -> None:
    buffer = DeltaBuffer(union)
    for element in [b"a", b"b", b"a", b"c"]:
        assert buffer.add(b"k", element) == []
    assert len(buffer) == 1
    assert buffer.pending(b"k") == b"a,b,c"
    assert batch(buffer, "m1") == {b"k": b"a,b,c"}


def test_a_delta_is_never_sent_back_to_its_origin() -> None:
    buffer = DeltaBuffer(union, max_transmits=10)
    buffer.add(b"k", b"x", origin="alice")
    assert batch(buffer, "alice") == {}
    assert batch(buffer, "bob") == {b"k": b"x"}
    buffer.add(b"k", b"y", origin="alice")  # still all from alice
    assert batch(buffer, "alice") == {}
    buffer.add(b"k", b"z", origin="bob")  # alice lacks bob's part now
    assert batch(buffer, "alice") == {b"k": b"x,y,z"}
    buffer.add(b"j", b"local")
    assert batch(buffer, "alice") == {b"j": b"local"}  # k already went to alice; j is local, so alice gets it


def test_each_entry_goes_to_at_most_max_transmits_distinct_members_then_retires() -> None:
    buffer = DeltaBuffer(union, max_transmits=2)
    buffer.add(b"k", b"x")
    assert batch(buffer, "m1") == {b"k": b"x"}
    assert batch(buffer, "m1") == {}  # never twice to the same member
    assert batch(buffer, "m2") == {b"k": b"x"}
    assert len(buffer) == 0 and buffer.total_bytes == 0
    assert batch(buffer, "m3") == {}


def test_a_new_join_makes_the_delta_news_again() -> None:
    buffer = DeltaBuffer(union, max_transmits=2)
    buffer.add(b"k", b"x")
    batch(buffer, "m1")
    buffer.add(b"k", b"y")
    assert batch(buffer, "m1") == {b"k": b"x,y"}


def test_least_sent_then_newest_go_first() -> None:
    buffer = DeltaBuffer(union, max_transmits=5)
    for i in range(3):
        buffer.add(b"k%d" % i, b"v")
    size = entry_wire_bytes(b"k0", b"v") + 6
    assert list(batch(buffer, "m1", size)) == [b"k2"]
    assert list(batch(buffer, "m2", size)) == [b"k1"]  # k2 has been sent once already


@given(st.lists(st.tuples(st.integers(0, 40), st.binary(min_size=1, max_size=60)), max_size=200),
       st.integers(min_value=40, max_value=600))
def test_batches_respect_the_byte_limit_and_the_backlog_stays_bounded(
    writes: list[tuple[int, bytes]], limit: int
) -> None:
    buffer = DeltaBuffer(lambda a, b: max(a, b), max_bytes=800, max_transmits=3, max_entry_bytes=200)
    dropped: set[bytes] = set()
    for key, delta in writes:
        dropped.update(buffer.add(b"key%d" % key, delta))
        assert buffer.total_bytes <= 800
    seen: dict[bytes, bytes] = {}
    for peer in ["a", "b", "c", "d"] * 30:
        message = buffer.take_batch(peer, limit)
        if message is not None:
            assert len(message) <= limit
            seen.update(decode_delta_batch(message))
    # Everything left was either delivered somewhere or reported for anti-entropy, never silently lost.
    latest = {b"key%d" % k: d for k, d in writes}
    assert all(k in seen or k in dropped or k in buffer for k in latest)


def test_overflow_drops_oldest_keys_and_reports_them() -> None:
    buffer = DeltaBuffer(union, max_bytes=3 * entry_wire_bytes(b"k0", b"v" * 10))
    assert buffer.add(b"k0", b"v" * 10) == []
    assert buffer.add(b"k1", b"v" * 10) == []
    assert buffer.add(b"k2", b"v" * 10) == []
    assert buffer.add(b"k0", b"v" * 10) == []  # same size after the join; k0 becomes the most recently updated
    assert buffer.add(b"k3", b"v" * 10) == [b"k1"]
    assert b"k1" not in buffer and b"k0" in buffer
    big = DeltaBuffer(union, max_entry_bytes=50)
    assert big.add(b"huge", b"x" * 100) == [b"huge"] and len(big) == 0


def test_discard_and_decode_errors() -> None:
    buffer = DeltaBuffer(union)
    buffer.add(b"k", b"v")
    assert buffer.discard(b"k") is True and buffer.discard(b"k") is False
    assert buffer.total_bytes == 0
    message = encode_delta_batch([(b"a", b"1")])
    assert message[0] == DELTA_BATCH_MESSAGE_TYPE and decode_delta_batch(message) == [(b"a", b"1")]
    for bad in [b"", b"\x00", message[:-1], bytes([DELTA_BATCH_MESSAGE_TYPE]) + b"\x91\x91\x01"]:
        with pytest.raises(PacketDecodeError) as info:
            decode_delta_batch(bad)
        assert isinstance(info.value, GossipError) and info.value.reason == "bad_delta_batch"
    with pytest.raises(GossipError):
        DeltaBuffer(union, max_transmits=0)
