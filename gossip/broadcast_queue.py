"""The transmit-limited broadcast queue: which membership updates ride on the next outgoing packet.

Each update is sent ``retransmit_mult * ceil(log10(N + 1))`` times, enough for epidemic spread to reach all N
members with high probability, then dropped. Least-sent updates go first (fresh news spreads fastest), newest
first among equals. A newer update about a member replaces any older one still queued: there is no point spreading
stale news. This is memberlist's ``TransmitLimitedQueue``, plus `fill_packet`, which decides what rides on one datagram.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from sortedcontainers import SortedList

from rumor.gossip.config import retransmit_limit
from rumor.gossip.messages import MAX_COMPOUND_PARTS, bin_overhead, compound_overhead, compound_size, encode_compound

PART_OVERHEAD = 3
"""msgpack bin16 header: the most framing one compound part below 64 KiB can cost."""

_MAX_MISSES = 8
"""Stop looking for a smaller update that still fits after this many too-big ones: keeps a call O(fit), not O(queue)."""


@dataclass(slots=True)
class _Entry:
    key: str
    data: bytes
    order: int
    transmits: int = field(default=0)

    def sort_key(self) -> tuple[int, int]:
        return (self.transmits, -self.order)


class BroadcastQueue:
    __slots__ = ("_by_key", "_counter", "_queue", "retransmit_mult")

    def __init__(self, retransmit_mult: int) -> None:
        self.retransmit_mult = retransmit_mult
        self._queue: SortedList = SortedList(key=_Entry.sort_key)
        self._by_key: dict[str, _Entry] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._queue)

    def enqueue(self, key: str, data: bytes) -> None:
        """Queue an encoded update about ``key`` (a member id), invalidating any older one about the same key."""
        old = self._by_key.pop(key, None)
        if old is not None:
            self._queue.remove(old)
        entry = _Entry(key, data, next(self._counter))
        self._by_key[key] = entry
        self._queue.add(entry)

    def get_broadcasts(self, overhead: int, limit: int, n_members: int, max_items: int = 1 << 30) -> list[bytes]:
        """Take as many updates as fit in ``limit`` bytes, each costing ``overhead`` extra bytes of framing.

        Every returned update counts as one more transmission; updates that reached their limit leave the queue.
        """
        if not self._queue or limit <= overhead:
            return []
        max_transmits = retransmit_limit(self.retransmit_mult, n_members)
        taken: list[_Entry] = []
        used = misses = 0
        for entry in self._queue:
            if len(taken) >= max_items:
                break
            cost = overhead + len(entry.data)
            if used + cost > limit:
                misses += 1
                if limit - used <= overhead or misses > _MAX_MISSES:
                    break
                continue
            used += cost
            taken.append(entry)
        for entry in taken:
            self._queue.remove(entry)
            entry.transmits += 1
            if entry.transmits >= max_transmits:
                del self._by_key[entry.key]
            else:
                self._queue.add(entry)
        return [entry.data for entry in taken]

    def prune(self, max_items: int) -> None:
        """Drop the most-sent updates beyond ``max_items`` (bounds memory when updates outpace gossip)."""
        while len(self._queue) > max_items:
            entry = self._queue.pop()
            del self._by_key[entry.key]

    def clear(self) -> None:
        self._queue.clear()
        self._by_key.clear()


def fill_packet(parts: list[bytes], limit: int, queue: BroadcastQueue, n_members: int,
                app_broadcasts: Callable[[int, int], list[bytes]] | None, wrap: Callable[[bytes], bytes],
                wrap_overhead: int) -> tuple[bytes, int]:
    """One datagram: the given messages, then queued updates, then app payloads in whatever room is left.

    ``app_broadcasts(overhead, limit)`` is the delegate hook; each payload is wrapped by ``wrap`` at a cost of
    ``wrap_overhead`` bytes. Returns the packet (empty if there is nothing to send) and how many app payloads were
    refused for not fitting. The result never exceeds ``limit``: sizes are computed exactly, then asserted.
    """
    def used_by(ps: list[bytes]) -> int:
        return compound_overhead(MAX_COMPOUND_PARTS) + sum(bin_overhead(len(p)) + len(p) for p in ps)

    parts = parts + queue.get_broadcasts(PART_OVERHEAD, limit - used_by(parts), n_members,
                                         MAX_COMPOUND_PARTS - len(parts))
    room = limit - used_by(parts)
    rejected = 0
    if app_broadcasts is not None and room > wrap_overhead:
        for payload in app_broadcasts(wrap_overhead, room):
            cost = len(payload) + wrap_overhead
            if cost > room or len(parts) >= MAX_COMPOUND_PARTS:
                rejected += 1
                continue
            parts.append(wrap(payload))
            room -= cost
    if not parts:
        return b"", rejected
    data = encode_compound(parts)
    assert len(data) == compound_size([len(p) for p in parts]) <= limit, "packet over max_packet_bytes"
    return data, rejected
