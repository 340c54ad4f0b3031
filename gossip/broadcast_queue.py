"""The transmit-limited broadcast queue: which membership updates ride on the next outgoing packet.

Each update is sent ``retransmit_mult * ceil(log10(N + 1))`` times, enough for epidemic spread to reach all N
members with high probability, then dropped. Least-sent updates go first (fresh news spreads fastest), newest
first among equals. A newer update about a member replaces any older one still queued: there is no point spreading
stale news. This is memberlist's ``TransmitLimitedQueue``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sortedcontainers import SortedList

from gossip.config import retransmit_limit

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

    def get_broadcasts(self, overhead: int, limit: int, n_members: int) -> list[bytes]:
        """Take as many updates as fit in ``limit`` bytes, each costing ``overhead`` extra bytes of framing.

        Every returned update counts as one more transmission; updates that reached their limit leave the queue.
        """
        if not self._queue or limit <= overhead:
            return []
        max_transmits = retransmit_limit(self.retransmit_mult, n_members)
        taken: list[_Entry] = []
        used = misses = 0
        for entry in self._queue:
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
