"""Chunked transfer: bounded messages (framing included), order- and duplicate-proof reassembly, clean rejections."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rumor.gossip.anti_entropy import (
    CHUNK_MESSAGE_TYPE,
    Chunk,
    ChunkError,
    Reassembler,
    SentValues,
    decode_chunk,
    encode_chunk,
    split,
    transfer_id_of,
)
from rumor.gossip.errors import GossipError


def test_an_8_mb_value_travels_in_messages_never_over_the_limit() -> None:
    value = random.Random(1).randbytes(8 * 1024 * 1024)
    limit = 64 * 1024
    messages = [encode_chunk(c) for c in split(value, limit)]
    assert max(len(m) for m in messages) <= limit
    assert len(messages) == -(-len(value) // (limit - 64))
    receiver = Reassembler(max_buffer_bytes=16 * 1024 * 1024)
    random.Random(2).shuffle(messages)
    results = [receiver.add(decode_chunk(m)) for m in messages]
    assert [r for r in results if r is not None] == [value]
    assert receiver.reserved_bytes == 0 and receiver.pending_transfers == 0


@given(
    value=st.binary(max_size=3000),
    limit=st.integers(min_value=65, max_value=400),
    seed=st.integers(min_value=0, max_value=2**32),
    dup_rate=st.floats(min_value=0, max_value=1),
)
def test_round_trip_under_duplication_and_reordering(value: bytes, limit: int, seed: int, dup_rate: float) -> None:
    rng = random.Random(seed)
    messages = [encode_chunk(c) for c in split(value, limit)]
    assert all(len(m) <= limit for m in messages)
    delivered = [m for m in messages for _ in range(1 + (rng.random() < dup_rate))]
    rng.shuffle(delivered)
    receiver = Reassembler(max_buffer_bytes=4096)
    done = [v for m in delivered if (v := receiver.add(decode_chunk(m))) is not None]
    assert done == [value], f"seed={seed}"
    # Stragglers after completion are ignored rather than starting a transfer that never ends.
    assert receiver.add(decode_chunk(messages[0])) is None
    assert receiver.pending_transfers == 0


@settings(max_examples=50)
@given(value=st.binary(min_size=1, max_size=500), data=st.data())
def test_any_flipped_bit_is_rejected(value: bytes, data: st.DataObject) -> None:
    message = bytearray(encode_chunk(next(iter(split(value, 1024)))))
    position = data.draw(st.integers(min_value=0, max_value=len(message) - 1))
    message[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(ChunkError):
        Reassembler().add(decode_chunk(bytes(message)))


def chunks_of(value: bytes, limit: int = 100) -> list[Chunk]:
    return list(split(value, limit))


def test_inconsistent_chunks_abort_the_transfer() -> None:
    value = bytes(range(200)) * 2
    chunks = chunks_of(value)
    receiver = Reassembler()
    receiver.add(chunks[0])
    liar = Chunk.make(chunks[0].transfer_id, 0, chunks[0].count, len(value), b"x" * len(chunks[0].data))
    with pytest.raises(ChunkError, match="inconsistent") as info:
        receiver.add(liar)
    assert info.value.reason == "inconsistent" and isinstance(info.value, GossipError | ValueError)
    assert receiver.pending_transfers == 0
    other_count = Chunk.make(chunks[1].transfer_id, 1, chunks[1].count + 1, len(value), chunks[1].data)
    receiver.add(chunks[2])
    with pytest.raises(ChunkError, match="inconsistent"):
        receiver.add(other_count)


def test_a_transfer_whose_parts_do_not_hash_to_its_id_never_completes() -> None:
    value = b"a" * 300
    forged = [Chunk.make(transfer_id_of(b"b" * 300), c.index, c.count, c.total_bytes, c.data) for c in chunks_of(value)]
    receiver = Reassembler()
    with pytest.raises(ChunkError, match="checksum_mismatch"):
        for chunk in forged:
            receiver.add(chunk)
    assert receiver.pending_transfers == 0


def test_malformed_messages_are_rejected_cleanly() -> None:
    for message in [b"", b"\x00", bytes([CHUNK_MESSAGE_TYPE]), bytes([CHUNK_MESSAGE_TYPE]) + b"\x93\x01\x02\x03",
                    bytes([CHUNK_MESSAGE_TYPE]) + b"\xc1"]:
        with pytest.raises(ChunkError):
            decode_chunk(message)
    good = chunks_of(b"hello world" * 20)[0]
    for bad in [
        Chunk(good.transfer_id[:3], 0, 1, 1, b"", b""),
        Chunk.make(good.transfer_id, 5, 2, 10, b""),
        Chunk.make(good.transfer_id, 0, 1, 2, b"too long"),
    ]:
        with pytest.raises(ChunkError):
            Reassembler().add(bad)


def test_memory_is_bounded_and_oldest_partial_transfers_are_evicted() -> None:
    receiver = Reassembler(max_buffer_bytes=1000, max_transfers=3)
    values = [bytes([i]) * 400 for i in range(4)]
    firsts = [chunks_of(v)[0] for v in values]
    for chunk in firsts:
        receiver.add(chunk)
        assert receiver.reserved_bytes <= 1000
    assert receiver.evicted == [firsts[0].transfer_id, firsts[1].transfer_id]
    assert receiver.pending_transfers == 2
    with pytest.raises(ChunkError, match="too_large"):
        receiver.add(chunks_of(b"z" * 1001)[0])
    assert receiver.missing(firsts[3].transfer_id) == list(range(1, firsts[3].count))


def test_empty_value_is_one_chunk() -> None:
    (only,) = chunks_of(b"")
    assert Reassembler().add(only) == b""


def test_chunk_wire_format_is_pinned() -> None:
    assert encode_chunk(next(iter(split(b"hello", 1024)))).hex() == (
        "5096c410170b0d7a18c2f37b44e68ffeee5ccc2d000105c40807a770fc989207adc40568656c6c6f"
    )


def test_the_context_keeps_equal_values_for_different_purposes_apart() -> None:
    value = b"same state" * 50
    one, two = list(split(value, 200, context=b"k1")), list(split(value, 200, context=b"k2"))
    assert one[0].transfer_id != two[0].transfer_id
    receiver = Reassembler()
    done = [receiver.add(c, context=b"k1") for c in one] + [receiver.add(c, context=b"k2") for c in two]
    assert [v for v in done if v is not None] == [value, value]
    wrong = Reassembler()
    with pytest.raises(ChunkError, match="checksum_mismatch"):
        for chunk in split(value, 200, context=b"k3"):
            wrong.add(chunk, context=b"wrong")


def test_a_sender_keeps_a_few_values_it_sends_within_its_bounds() -> None:
    """`SentValues`: "send chunks from i" finds the value by transfer id (a diff cannot be rebuilt from its key),
    bound to its key; at most ``max_values``, and past ``max_bytes`` only the newest; the oldest go first."""
    values = SentValues(max_values=3, max_bytes=100)
    for i in range(4):
        values.put(b"t%d" % i, b"key%d" % i, b"v" * 10)
    assert values.get(b"t0", b"key0") is None  # the oldest of four went
    assert values.get(b"t1", b"key1") == b"v" * 10
    assert values.get(b"t1", b"other key") is None
    values.put(b"t4", b"key4", b"w" * 95)  # over the byte bound: older ones go, the newest stays whatever its size
    assert values.get(b"t4", b"key4") == b"w" * 95
    assert values.get(b"t2", b"key2") is None and values.get(b"t3", b"key3") is None
    values.put(b"big", b"key", b"x" * 500)
    assert values.get(b"big", b"key") == b"x" * 500 and values.get(b"t4", b"key4") is None
