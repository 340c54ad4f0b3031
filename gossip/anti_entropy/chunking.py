"""Moving one large opaque value (a multi-megabyte CRDT state) as bounded chunks, and reassembling it safely.

Why it looks like this:

* **The transfer id is the value's blake2b-16 digest.** It names the transfer *and* checks the reassembled whole, so
  resending the same value is the same transfer (duplicates across retries are idempotent) and a transfer whose
  parts were mixed up can never complete into a wrong value.
* **Every chunk carries its own checksum** (blake2b-8 over the header and data), so a garbled chunk is rejected on
  arrival instead of poisoning a whole transfer that is only found bad at the end.
* **The size limit covers the framing.** `split` derives the data size from ``max_message_bytes`` minus the worst-case
  encoding overhead, so no encoded chunk ever exceeds the limit (the tests assert it on the encoded bytes).
* **The receiver's memory is bounded** by ``max_buffer_bytes`` (declared sizes are reserved up front) and
  ``max_transfers``; when full, the least recently progressed transfer is evicted (a vanished sender cannot pin memory
  forever), and ids of recently completed transfers are remembered so late duplicates are ignored, not restarted.
* **The sender keeps what it is sending** (`SentValues`): the receiver asks for the next chunks by transfer id, often
  a message later, and a value that is a diff for the receiver's context cannot be made again from the key alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import blake2b

import msgpack

from rumor.gossip.errors import GossipError
from rumor.gossip.msgpack_wire import UNPACK_ERRORS, unpack_error_reason

CHUNK_MESSAGE_TYPE = 0x50
"""Type byte of a standalone chunk message (the replication layer's app channel carries it)."""

TRANSFER_ID_BYTES = 16
CHECKSUM_BYTES = 8
CHUNK_OVERHEAD_BYTES = 64
"""Upper bound on everything in an encoded chunk message except the data (type byte, msgpack headers, fields)."""

MAX_COUNT = 1 << 24


class ChunkError(GossipError, ValueError):
    """A chunk is malformed, garbled, inconsistent with its transfer, or does not fit the receiver's bounds."""

    def __init__(self, reason: str, transfer_id: bytes = b"", detail: str = "") -> None:
        text = f"{reason} (transfer {transfer_id.hex()[:12]})" if transfer_id else reason
        super().__init__(f"{text}: {detail}" if detail else text)
        self.reason = reason
        self.transfer_id = transfer_id
        self.detail = detail


def transfer_id_of(value: bytes, context: bytes = b"") -> bytes:
    """The id (and whole-value checksum) of a transfer of ``value``.

    ``context`` binds the id to what the value is for (anti-entropy passes the key): two keys holding equal states
    must not become one transfer. The receiver passes the same context to `Reassembler.add`.
    """
    h = blake2b(len(context).to_bytes(4, "big") + context, digest_size=TRANSFER_ID_BYTES, person=b"rumor-chunk-tid")
    h.update(value)
    return h.digest()


def _chunk_checksum(transfer_id: bytes, index: int, count: int, total_bytes: int, data: bytes) -> bytes:
    header = transfer_id + index.to_bytes(4, "big") + count.to_bytes(4, "big") + total_bytes.to_bytes(8, "big")
    return blake2b(header + data, digest_size=CHECKSUM_BYTES, person=b"rumor-chunk-sum").digest()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a transfer: ``data`` is bytes ``[offset, offset+len)`` of a value of ``total_bytes``."""

    transfer_id: bytes
    index: int
    count: int
    total_bytes: int
    data: bytes
    checksum: bytes

    @classmethod
    def make(cls, transfer_id: bytes, index: int, count: int, total_bytes: int, data: bytes) -> Chunk:
        return cls(transfer_id, index, count, total_bytes, data, _chunk_checksum(transfer_id, index, count,
                                                                                  total_bytes, data))

    def validate(self) -> None:
        """Raise `ChunkError` unless the fields are in range and the checksum matches the contents."""
        if len(self.transfer_id) != TRANSFER_ID_BYTES:
            raise ChunkError("bad_transfer_id", detail=f"{len(self.transfer_id)} bytes")
        if not 1 <= self.count <= MAX_COUNT or not 0 <= self.index < self.count:
            raise ChunkError("bad_index", self.transfer_id, f"index {self.index} of {self.count}")
        if not 0 <= self.total_bytes < 1 << 62 or len(self.data) > self.total_bytes:
            raise ChunkError("bad_size", self.transfer_id, f"{len(self.data)} of {self.total_bytes}")
        expected = _chunk_checksum(self.transfer_id, self.index, self.count, self.total_bytes, self.data)
        if self.checksum != expected:
            raise ChunkError("checksum_mismatch", self.transfer_id, f"chunk {self.index}")

    def to_wire(self) -> list[object]:
        """The msgpack-ready field list (also embedded in anti-entropy messages)."""
        return [self.transfer_id, self.index, self.count, self.total_bytes, self.checksum, self.data]

    @classmethod
    def from_wire(cls, fields: object) -> Chunk:
        """Inverse of `to_wire`; raises `ChunkError` on any shape or type problem, and checks the checksum."""
        if not isinstance(fields, list | tuple) or len(fields) != 6:
            raise ChunkError("malformed", detail="expected a 6-field array")
        tid, index, count, total, checksum, data = fields
        if not (isinstance(tid, bytes) and isinstance(checksum, bytes) and isinstance(data, bytes)):
            raise ChunkError("malformed", detail="id, checksum and data must be bytes")
        if not all(type(v) is int for v in (index, count, total)):
            raise ChunkError("malformed", detail="index, count and total must be integers")
        chunk = cls(tid, index, count, total, data, checksum)
        chunk.validate()
        return chunk


def encode_chunk(chunk: Chunk) -> bytes:
    """A standalone chunk message: type byte + msgpack array."""
    return bytes([CHUNK_MESSAGE_TYPE]) + msgpack.packb(chunk.to_wire(), use_bin_type=True)


def decode_chunk(message: bytes) -> Chunk:
    """Parse and check a standalone chunk message; anything wrong raises `ChunkError`."""
    if not message or message[0] != CHUNK_MESSAGE_TYPE:
        raise ChunkError("wrong_type", detail=f"first byte {message[:1].hex() or 'missing'}")
    try:
        fields = msgpack.unpackb(message[1:], raw=False, strict_map_key=True, use_list=True)
    except UNPACK_ERRORS as exc:
        raise ChunkError("malformed", detail=unpack_error_reason(exc)) from exc
    return Chunk.from_wire(fields)


def chunk_data_bytes(max_message_bytes: int) -> int:
    """How much value data fits one chunk message of at most ``max_message_bytes``, framing included."""
    size = max_message_bytes - CHUNK_OVERHEAD_BYTES
    if size < 1:
        raise ChunkError("limit_too_small", detail=f"max_message_bytes={max_message_bytes}")
    return size


def split(value: bytes, max_message_bytes: int = 64 * 1024, context: bytes = b"") -> Iterator[Chunk]:
    """The chunks of ``value``, each encoding to at most ``max_message_bytes`` (lazily: slices, no full copy)."""
    size = chunk_data_bytes(max_message_bytes)
    tid = transfer_id_of(value, context)
    count = max(1, -(-len(value) // size))
    if count > MAX_COUNT:
        raise ChunkError("too_large", tid, f"{len(value)} bytes needs {count} chunks")
    view = memoryview(value)
    for index in range(count):
        yield Chunk.make(tid, index, count, len(value), bytes(view[index * size : (index + 1) * size]))


@dataclass(slots=True)
class _Partial:
    count: int
    total_bytes: int
    parts: dict[int, bytes]
    received_bytes: int = 0


class SentValues:
    """The values of the sender's recent transfers, by id, so "send chunks from index i" finds the same bytes: a
    few transfers may be in flight at once (one per key a peer is being sent), and a diff cannot be rebuilt from
    its key. Bounded: at most ``max_values``, and beyond ``max_bytes`` only the newest; the oldest go first (their
    receiver is then told the transfer is gone, and the key is repaired by a later session)."""

    def __init__(self, max_values: int = 8, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_values = max_values
        self.max_bytes = max_bytes
        self._values: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()  # transfer id -> (context, value)
        self._bytes = 0

    def get(self, transfer_id: bytes, context: bytes) -> bytes | None:
        found = self._values.get(transfer_id)
        if found is None or found[0] != context:
            return None
        self._values.move_to_end(transfer_id)
        return found[1]

    def put(self, transfer_id: bytes, context: bytes, value: bytes) -> None:
        old = self._values.pop(transfer_id, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._values[transfer_id] = (context, value)
        self._bytes += len(value)
        while len(self._values) > self.max_values or (self._bytes > self.max_bytes and len(self._values) > 1):
            _, (_, dropped) = self._values.popitem(last=False)
            self._bytes -= len(dropped)


class Reassembler:
    """Collects chunks of many concurrent transfers into whole values within fixed memory bounds.

    `add` is idempotent for exact duplicates and indifferent to order. A chunk that contradicts what the transfer
    already holds (other count, other size, other bytes at the same index) aborts that transfer and raises.
    """

    def __init__(
        self,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        max_transfers: int = 16,
        remember_completed: int = 256,
    ) -> None:
        for name, value, least in (("max_buffer_bytes", max_buffer_bytes, 1), ("max_transfers", max_transfers, 1),
                                   ("remember_completed", remember_completed, 0)):
            if value < least:
                raise ChunkError("bad_bounds", detail=f"{name}={value} must be >= {least}")
        self.max_buffer_bytes = max_buffer_bytes
        self.max_transfers = max_transfers
        self._remember = remember_completed
        self._partials: OrderedDict[bytes, _Partial] = OrderedDict()  # least recently progressed first
        self._completed: OrderedDict[bytes, None] = OrderedDict()
        self._reserved = 0
        self.evicted: list[bytes] = []
        """Ids of transfers dropped to make room, oldest first (the caller may clear it)."""

    @property
    def reserved_bytes(self) -> int:
        """Bytes reserved by partial transfers (their declared totals): never above ``max_buffer_bytes``."""
        return self._reserved

    @property
    def pending_transfers(self) -> int:
        return len(self._partials)

    def add(self, chunk: Chunk, context: bytes = b"") -> bytes | None:
        """Take one chunk; return the whole value when this chunk completes it, else None.

        ``context`` must be what the sender passed to `split` / `transfer_id_of` (it is checked at completion).
        """
        chunk.validate()
        tid = chunk.transfer_id
        if tid in self._completed:
            return None
        partial = self._partials.get(tid)
        if partial is None:
            partial = self._start(chunk)
        elif partial.count != chunk.count or partial.total_bytes != chunk.total_bytes:
            self.abandon(tid)
            raise ChunkError("inconsistent", tid, f"count/size {chunk.count}/{chunk.total_bytes} vs "
                                                  f"{partial.count}/{partial.total_bytes}")
        self._partials.move_to_end(tid)
        held = partial.parts.get(chunk.index)
        if held is not None:
            if held != chunk.data:
                self.abandon(tid)
                raise ChunkError("inconsistent", tid, f"chunk {chunk.index} resent with other bytes")
            return None
        if partial.received_bytes + len(chunk.data) > partial.total_bytes:
            self.abandon(tid)
            raise ChunkError("bad_size", tid, "chunks add up to more than the declared size")
        partial.parts[chunk.index] = chunk.data
        partial.received_bytes += len(chunk.data)
        if len(partial.parts) < partial.count:
            return None
        self.abandon(tid)
        value = b"".join(partial.parts[i] for i in range(partial.count))
        if len(value) != partial.total_bytes or transfer_id_of(value, context) != tid:
            raise ChunkError("checksum_mismatch", tid, "reassembled value does not match its transfer id")
        self._completed[tid] = None
        while len(self._completed) > self._remember:
            self._completed.popitem(last=False)
        return value

    def _start(self, chunk: Chunk) -> _Partial:
        if chunk.total_bytes > self.max_buffer_bytes:
            raise ChunkError("too_large", chunk.transfer_id,
                             f"{chunk.total_bytes} bytes over the {self.max_buffer_bytes}-byte buffer")
        while self._partials and (
            len(self._partials) >= self.max_transfers or self._reserved + chunk.total_bytes > self.max_buffer_bytes
        ):
            oldest = next(iter(self._partials))
            self.abandon(oldest)
            self.evicted.append(oldest)
            del self.evicted[: -self.max_transfers]
        partial = _Partial(chunk.count, chunk.total_bytes, {})
        self._partials[chunk.transfer_id] = partial
        self._reserved += chunk.total_bytes
        return partial

    def abandon(self, transfer_id: bytes) -> bool:
        """Drop a partial transfer and release its reservation; returns whether it existed."""
        partial = self._partials.pop(transfer_id, None)
        if partial is None:
            return False
        self._reserved -= partial.total_bytes
        return True

    def missing(self, transfer_id: bytes) -> list[int]:
        """Indexes not yet received for a partial transfer (empty if unknown), so a sender can resend just those."""
        partial = self._partials.get(transfer_id)
        if partial is None:
            return []
        return [i for i in range(partial.count) if i not in partial.parts]


__all__ = [
    "CHUNK_MESSAGE_TYPE",
    "CHUNK_OVERHEAD_BYTES",
    "Chunk",
    "ChunkError",
    "Reassembler",
    "SentValues",
    "chunk_data_bytes",
    "decode_chunk",
    "encode_chunk",
    "split",
    "transfer_id_of",
]
