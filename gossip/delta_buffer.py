"""Pending deltas waiting to be gossiped: joined per key, never echoed to their origin, sent in bounded batches.

Why it looks like this:

* **One entry per key, deltas joined** with the caller's ``join`` (a CRDT join on encoded deltas, supplied by the
  replication layer: this package never learns what the bytes mean). Ten updates to a hot key between two gossip
  rounds cost one delta on the wire, not ten, and the buffer grows with the number of *keys* touched, not writes.
* **Origin tracking.** Each entry remembers the members known to hold all of it already: the member it came from,
  as long as every part joined into it came from that same member (the intersection of the parts' origins). It is
  never sent to them; a joined delta with a local or a second member's part goes to everyone.
* **Retransmission like memberlist's broadcast queue.** Each entry is sent to at most ``max_transmits`` distinct
  members (the caller sizes that from the cluster, e.g. ``retransmit_mult * ceil(log10(n + 1))``), least-sent and
  then newest first, and then retired; a new join resets its count, since the joined delta is news again.
* **Bounded.** When the buffered bytes exceed ``max_bytes``, the least recently updated keys are dropped and
  *returned to the caller* as "needs anti-entropy": dissemination degrades to the slower repair path instead of
  growing without limit. A delta too big to ever fit a batch is returned the same way at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack
from sortedcontainers import SortedList

from gossip.errors import ConfigError, PacketDecodeError, PacketTooLargeError

DELTA_BATCH_MESSAGE_TYPE = 0x60
"""Type byte of a batch of deltas (carried on the replication layer's app channel)."""

BATCH_HEADER_BYTES = 6
"""Type byte + worst-case msgpack array header."""

Join = Callable[[bytes, bytes], bytes]


def entry_wire_bytes(key: bytes, delta: bytes) -> int:
    """Upper bound on the bytes one ``[key, delta]`` pair adds to an encoded batch."""
    return 1 + _bin_bytes(len(key)) + _bin_bytes(len(delta))


def _bin_bytes(n: int) -> int:
    return n + (2 if n < 256 else 3 if n < 65536 else 5)


def encode_delta_batch(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A batch message: type byte + msgpack array of ``[key, delta]`` pairs."""
    return bytes([DELTA_BATCH_MESSAGE_TYPE]) + msgpack.packb([[k, d] for k, d in entries], use_bin_type=True)


def decode_delta_batch(message: bytes) -> list[tuple[bytes, bytes]]:
    """Parse a batch; anything else raises `PacketDecodeError` (reason ``bad_delta_batch``)."""
    if not message or message[0] != DELTA_BATCH_MESSAGE_TYPE:
        raise PacketDecodeError("bad_delta_batch", "wrong type byte")
    try:
        rows = msgpack.unpackb(message[1:], raw=False, use_list=True)
    except (ValueError, TypeError) as exc:
        raise PacketDecodeError("bad_delta_batch", str(exc)) from exc
    if not isinstance(rows, list) or not all(
        isinstance(r, list) and len(r) == 2 and isinstance(r[0], bytes) and isinstance(r[1], bytes) for r in rows
    ):
        raise PacketDecodeError("bad_delta_batch", "expected an array of [key, delta] byte pairs")
    return [(k, d) for k, d in rows]


@dataclass(slots=True)
class _Entry:
    delta: bytes
    holders: frozenset[str]  # members known to hold all of this delta already
    seq: int
    transmits: int = 0
    sent_to: set[str] = field(default_factory=set)

    def size(self, key: bytes) -> int:
        return entry_wire_bytes(key, self.delta)


class DeltaBuffer:
    """Per-key joined deltas awaiting dissemination; see the module docstring for the rules."""

    def __init__(self, join: Join, max_bytes: int = 1024 * 1024, max_transmits: int = 4,
                 max_entry_bytes: int = 1400 - BATCH_HEADER_BYTES) -> None:
        if max_bytes < 1 or max_transmits < 1 or max_entry_bytes < 8:
            raise ConfigError("max_bytes", max_bytes, "bounds must be positive (max_entry_bytes >= 8)")
        self._join = join
        self.max_bytes = max_bytes
        self.max_transmits = max_transmits
        self.max_entry_bytes = max_entry_bytes
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()  # least recently updated first
        self._order: SortedList = SortedList()  # (transmits, -seq, key): who goes into the next batch first
        self._seq = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def total_bytes(self) -> int:
        """Encoded size of everything buffered (never above ``max_bytes`` after `add` returns)."""
        return self._bytes

    def pending(self, key: bytes) -> bytes | None:
        """The joined delta waiting for ``key``, if any."""
        entry = self._entries.get(key)
        return None if entry is None else entry.delta

    def add(self, key: bytes, delta: bytes, origin: str | None = None) -> list[bytes]:
        """Buffer a delta (``origin`` None for a local write); return keys dropped for lack of room.

        The returned keys need anti-entropy: their deltas will not be gossiped. That includes ``key`` itself when its
        joined delta has grown past ``max_entry_bytes``.
        """
        self._seq += 1
        holders = frozenset() if origin is None else frozenset({origin})
        old = self._entries.get(key)
        if old is not None:
            self._forget(key, old)
            delta = self._join(old.delta, delta)
            holders &= old.holders
        if entry_wire_bytes(key, delta) > self.max_entry_bytes:
            return [key]
        entry = _Entry(delta, holders, self._seq)
        self._entries[key] = entry
        self._order.add((0, -entry.seq, key))
        self._bytes += entry.size(key)
        dropped: list[bytes] = []
        while self._bytes > self.max_bytes:
            oldest, victim = next(iter(self._entries.items()))
            self._forget(oldest, victim)
            dropped.append(oldest)
        return dropped

    def discard(self, key: bytes) -> bool:
        """Stop disseminating ``key`` (e.g. anti-entropy repaired everyone); returns whether it was buffered."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        self._forget(key, entry)
        return True

    def _forget(self, key: bytes, entry: _Entry) -> None:
        del self._entries[key]
        self._order.remove((entry.transmits, -entry.seq, key))
        self._bytes -= entry.size(key)

    def take_batch(self, peer: str, limit_bytes: int, max_transmits: int | None = None) -> bytes | None:
        """An encoded batch for ``peer`` of at most ``limit_bytes``, or None when there is nothing for it.

        Counts a transmission for every entry included and retires entries sent to ``max_transmits`` members.
        """
        picked = self.select(peer, limit_bytes - BATCH_HEADER_BYTES)
        if not picked:
            return None
        limit = self.max_transmits if max_transmits is None else max_transmits
        for key in picked:
            entry = self._entries[key]
            self._order.remove((entry.transmits, -entry.seq, key))
            entry.transmits += 1
            entry.sent_to.add(peer)
            if entry.transmits >= limit:
                del self._entries[key]
                self._bytes -= entry.size(key)
            else:
                self._order.add((entry.transmits, -entry.seq, key))
        message = encode_delta_batch(list(picked.items()))
        if len(message) > limit_bytes:  # the size bounds above are upper bounds: this is a bug, never a network event
            raise PacketTooLargeError(len(message), limit_bytes)
        return message

    def select(self, peer: str, budget: int) -> dict[bytes, bytes]:
        """Keys (with deltas) that would go to ``peer`` within ``budget`` bytes, without counting a transmission."""
        picked: dict[bytes, bytes] = {}
        for _, _, key in self._order:
            if budget < 8:
                break
            entry = self._entries[key]
            if peer in entry.holders or peer in entry.sent_to:
                continue
            size = entry.size(key)
            if size <= budget:
                picked[key] = entry.delta
                budget -= size
        return picked


__all__ = [
    "BATCH_HEADER_BYTES",
    "DELTA_BATCH_MESSAGE_TYPE",
    "DeltaBuffer",
    "decode_delta_batch",
    "encode_delta_batch",
    "entry_wire_bytes",
]
