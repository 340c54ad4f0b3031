"""Delta dissemination: batched delta groups pushed every interval to a few random live members, epidemically.

How a delta travels:

1. A local update's delta is *joined* into this interval's open batch, per key (`LocalBatch.add`): a key written
   100 times in one interval leaves as one joined delta, not 100 queued ones.
2. At the next push round the batch is sealed into delta groups ``(origin, seq)`` each at most ``max_push_bytes``.
   A single key's delta bigger than that is not pushed at all: it is left to anti-entropy (`overflow_keys`).
3. Each round, `Disseminator.tick` picks ``fanout`` random live members and sends each one message packing the
   queued groups that fit (``max_push_bytes``), skipping the member a group came from and its origin. A group is
   pushed in `ReplicationConfig.transmits` rounds, then dropped from the queue.
4. A receiver merges a group it has not seen (dedupe by ``(origin, seq)`` in `Coverage`) and queues it for
   forwarding exactly like a local one: local and received deltas share this path. A seen group is ignored, so each
   node forwards a group a bounded number of times and the epidemic dies out.

Bounded memory: the queue holds at most ``max_backlog_bytes``; beyond that the oldest groups are dropped and counted
(`stats.dropped_groups`), and ``sync_wanted`` asks the driver for an early anti-entropy session: a large backlog
degrades into anti-entropy (whose cost follows the differences) instead of into unbounded buffers.

Pure: the caller passes ``now``, the live member ids and a seeded ``random.Random``; `tick` returns ``(member,
payload)`` pairs and the driver picks datagram or stream by size.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any

from rumor.crdt import encode
from rumor.server.replication.config import ReplicationConfig
from rumor.server.replication.coverage import Coverage
from rumor.server.replication.wire import PUSH_OVERHEAD, DeltaEntry, DeltaGroup, OriginKey, pack_push

_ENTRY_OVERHEAD = 16  # msgpack headers of one [key, type, delta] row, upper bound
_GROUP_OVERHEAD = 40  # [origin, epoch, seq, rows] headers, upper bound (plus the origin id)
MADE_TIMES_KEPT = 4096
"""When this node made each of its latest groups (for `group_age_after`: its replication lag as peers see it)."""


@dataclass(slots=True)
class DisseminationStats:
    groups_made: int = 0
    groups_received: int = 0
    groups_duplicate: int = 0
    groups_forwarded: int = 0
    dropped_groups: int = 0
    oversized_deltas: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    joined_deltas: int = 0


class LocalBatch:
    """This interval's local deltas, joined per key (CRDT join: the delta of two updates is their merge).

    A key written once in the interval (the common case) keeps the delta object it was given, uncopied, with its
    encoding when the writer already made one (the durable log did), so sealing it costs nothing more. Only a
    second write to the key copies the first delta, joins into the copy and drops the now stale bytes.
    """

    def __init__(self) -> None:
        self._deltas: dict[str, _Pending] = {}
        self.joins = 0

    def __len__(self) -> int:
        return len(self._deltas)

    def add(self, key: str, type_name: str, delta: Any, blob: bytes | None = None) -> None:
        held = self._deltas.get(key)
        if held is None or held.type_name != type_name:
            self._deltas[key] = _Pending(type_name, delta, blob, owned=False)
            return
        if not held.owned:
            held.delta, held.owned = held.delta.copy(), True
        held.delta.merge(delta)
        held.blob = None
        self.joins += 1

    def take(self, limit: int | None = None) -> list[tuple[str, str, bytes]]:
        """(key, type name, encoded joined delta) for every key written since the last take, or for the ``limit``
        written first of them (the others stay for the next take)."""
        deltas = self._deltas
        if limit is None or limit >= len(deltas):
            self._deltas, taken = {}, list(deltas.items())
        else:
            taken = list(islice(deltas.items(), limit))
            for key, _ in taken:
                del deltas[key]
        return [(key, p.type_name, p.blob if p.blob is not None else encode(p.delta)) for key, p in taken]


@dataclass(slots=True)
class _Pending:
    type_name: str
    delta: Any
    blob: bytes | None
    owned: bool  # False while `delta` is the caller's object (never mutate it then)


@dataclass(slots=True)
class _Queued:
    group: DeltaGroup
    source: str | None  # the member we got it from (never sent back there); None for local groups
    rounds_left: int


class Disseminator:
    def __init__(self, node_id: str, origin: OriginKey, config: ReplicationConfig, coverage: Coverage) -> None:
        self.node_id = node_id
        self.origin = origin
        self.config = config
        self.coverage = coverage
        self.batch = LocalBatch()
        self.stats = DisseminationStats()
        self._queue: deque[_Queued] = deque()
        self._queued_bytes = 0
        self._seq = 0
        self.next_push_at = 0.0
        self.sync_wanted = False
        """Set when something was left to anti-entropy (dropped backlog, oversized delta); the driver clears it."""
        self.overflow_keys: set[str] = set()
        self._made_at: deque[tuple[int, float]] = deque(maxlen=MADE_TIMES_KEPT)

    @property
    def backlog_bytes(self) -> int:
        return self._queued_bytes

    @property
    def seq(self) -> int:
        return self._seq

    # -- input -----------------------------------------------------------------------------------------------------

    def record_local(self, key: str, type_name: str, delta: Any, blob: bytes | None = None) -> None:
        self.batch.add(key, type_name, delta, blob)

    def receive(self, groups: list[DeltaGroup], sender: str, now: float) -> list[DeltaGroup]:
        """Groups not seen before (merge them); they are queued for forwarding, never back to ``sender``."""
        fresh = []
        for group in groups:
            self.stats.groups_received += 1
            if group.origin == self.origin or not self.coverage.record(group.origin, group.seq, now):
                self.stats.groups_duplicate += 1
                continue
            fresh.append(group)
            if group.origin not in self.coverage.retired:
                self._enqueue(_Queued(group, sender, 0))
        return fresh

    # -- output ----------------------------------------------------------------------------------------------------

    def seal(self, now: float, max_entries: int | None = None) -> list[DeltaGroup]:
        """Turn the open batch (or its ``max_entries`` oldest keys: a driver seals a big batch in steps) into groups
        (each fits one push message) and queue them; returns them."""
        entries = []
        for key, type_name, data in self.batch.take(max_entries):
            if len(data) + len(key) + len(type_name) + _ENTRY_OVERHEAD + _GROUP_OVERHEAD + len(self.node_id) \
                    + PUSH_OVERHEAD > self.config.max_push_bytes:
                self.stats.oversized_deltas += 1
                self.overflow_keys.add(key)
                self.sync_wanted = True
                continue
            entries.append(DeltaEntry(key, type_name, data))
        self.stats.joined_deltas += self.batch.joins
        self.batch.joins = 0
        made: list[DeltaGroup] = []
        budget = self.config.max_push_bytes - PUSH_OVERHEAD - _GROUP_OVERHEAD - len(self.node_id)
        current: list[DeltaEntry] = []
        size = 0
        for entry in entries:
            cost = len(entry.key) + len(entry.type_name) + len(entry.delta) + _ENTRY_OVERHEAD
            if current and size + cost > budget:
                made.append(self._make(current, now))
                current, size = [], 0
            current.append(entry)
            size += cost
        if current:
            made.append(self._make(current, now))
        return made

    def _make(self, entries: list[DeltaEntry], now: float) -> DeltaGroup:
        self._seq += 1
        group = DeltaGroup.build(self.origin, self._seq, entries)
        self.coverage.record(self.origin, self._seq, now)
        self.stats.groups_made += 1
        self._enqueue(_Queued(group, None, 0))
        self._made_at.append((self._seq, now))
        return group

    def group_age_after(self, seq: int, now: float) -> float | None:
        """Seconds since this node made its oldest group after ``seq`` (what a peer holding groups 1..``seq`` of
        ours lacks), or None when it made none. Past the times kept, the oldest kept is the answer: a lower bound."""
        for made_seq, made_at in self._made_at:
            if made_seq > seq:
                return max(0.0, now - made_at)
        return None

    def _enqueue(self, item: _Queued) -> None:
        self._queue.append(item)
        self._queued_bytes += len(item.group.raw)
        while self._queued_bytes > self.config.max_backlog_bytes and self._queue:
            old = self._queue.popleft()
            self._queued_bytes -= len(old.group.raw)
            self.stats.dropped_groups += 1
            self.sync_wanted = True

    def due(self, now: float) -> bool:
        return now >= self.next_push_at

    def tick(self, now: float, live: list[str], rng: random.Random) -> list[tuple[str, bytes]]:
        """One push round if due: seal the batch, push queued groups to ``fanout`` random live members."""
        if now < self.next_push_at:
            return []
        self.next_push_at = now + self.config.push_interval_s
        self.seal(now)
        if not self._queue:
            return []
        peers = sorted(m for m in live if m != self.node_id)
        rounds = self.config.transmits(len(peers) + 1)
        for item in self._queue:
            if item.rounds_left == 0:
                item.rounds_left = rounds
        if not peers:
            return []
        targets = rng.sample(peers, min(self.config.fanout, len(peers)))
        out: list[tuple[str, bytes]] = []
        used: set[int] = set()
        crowded: set[int] = set()  # did not fit a message this round: keeps its rounds
        for target in targets:
            chosen: list[bytes] = []
            size = PUSH_OVERHEAD
            for i, item in enumerate(self._queue):
                group = item.group
                if target == item.source or target == group.origin[0]:
                    continue
                if size + len(group.raw) > self.config.max_push_bytes:
                    crowded.add(i)
                    continue
                chosen.append(group.raw)
                size += len(group.raw)
                used.add(i)
            if chosen:
                payload = pack_push(chosen)
                out.append((target, payload))
                self.stats.messages_sent += 1
                self.stats.bytes_sent += len(payload)
        kept: deque[_Queued] = deque()
        for i, item in enumerate(self._queue):
            if i in used or i not in crowded:  # sent, or nobody eligible to receive it: a round passes
                item.rounds_left -= 1
                if i in used and item.source is not None and item.rounds_left == rounds - 1:
                    self.stats.groups_forwarded += 1
            if item.rounds_left > 0:
                kept.append(item)
            else:
                self._queued_bytes -= len(item.group.raw)
        self._queue = kept
        return out

    def queued(self) -> int:
        return len(self._queue)


__all__ = ["DisseminationStats", "Disseminator", "LocalBatch"]
