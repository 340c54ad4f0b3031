"""The checkpointer: folds the keys changed since their last checkpoint into full states in the `states` table, so
the log stays short and a key can leave memory (`server.state_cache`), without holding the event loop.

What it keeps, per key: ``dirty`` (the seq of the key's oldest logged record not folded yet, oldest key first: the
first value is the log's low-water mark, below which every record is in some checkpointed state) and, for states of
`BIG_STATE_BYTES` and more, ``big_states`` (the bytes of its last checkpoint and those logged since: such a key is
folded again once what it logged adds up to half its state, so one add to a million-element set does not rewrite
the set each round).

How it shares the loop (`Node` runs `round_in_slices` then `drain_backlog` every `checkpoint_interval_s`):
- a round folds `checkpoint_batch_keys` keys (four times that while the log spans `checkpoint_max_log_records`
  records), in time slices (`loop_slices.TimeSlices`) with the loop free between them, and more while its slices
  have taken less than `ROUND_BUDGET_S`;
- a big state is encoded and deflated on the offloader's worker (`_off_loop`): the worker reads the live state, and
  a change logged meanwhile (``changes``) discards the result, so what is stored is always the state as one instant
  saw it;
- while the keys not checkpointed hold over `DIRTY_SHARE_OF_CACHE` of the cache's budget (`backlogged`: only a
  checkpointed key may leave memory), `drain_backlog` folds more between rounds, in slices as long as the rest of
  the loop ran since the previous one;
- each round also gives rows stored without digest columns theirs (`backfill_digests`) and drops decoded states
  past the cache's budget.

Every write goes through `_queue_checkpoints`: the hash tree over stored digests hears of each digest before its row
is queued, and the keyspace lets a key go once its row has committed (`server.state_writes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from itertools import islice
from typing import Any, Protocol

from rumor.crdt import encode
from rumor.crdt.encoding import compressed
from rumor.server.config import ServerConfig
from rumor.server.disk_index import DigestColumns, StateReader, digest_columns
from rumor.server.keyspace import Keyspace
from rumor.server.loop_slices import TimeSlices
from rumor.server.metrics import Metrics
from rumor.server.offload import ChangeCounter, Offloader
from rumor.server.state_cache import UNKNOWN_STATE_BYTES, Entry
from rumor.server.state_writes import when_committed, write_stored
from rumor.server.storage import StateRow, Storage
from rumor.server.supervisor import Supervisor

#: a checkpointed state this big is not folded again on every round its key is dirty (see `Checkpointer.checkpoint`)
BIG_STATE_BYTES = 64 * 1024
#: decoded states the checkpointer may drop a round to keep within `state_cache_bytes` (`server.state_cache`)
EVICTIONS_PER_ROUND = 4096
#: rows stored without digest columns that a checkpoint round gives them (`Checkpointer.backfill_digests`)
BACKFILL_PER_ROUND = 1024
#: the share of `state_cache_bytes` that keys not checkpointed yet may take before the checkpointer works between
#: its rounds too (`Checkpointer.drain_backlog`), and the evictions it makes after each slice of that work
DIRTY_SHARE_OF_CACHE = 0.5
EVICTIONS_PER_SLICE = 1024
MAX_SLICE_S = 0.005
#: the loop time a round may take past its `checkpoint_batch_keys` while keys wait (a tenth of the default
#: `checkpoint_interval_s`, in slices)
ROUND_BUDGET_S = 0.025


class CheckpointHost(Protocol):
    """What the checkpointer uses of its node."""

    config: ServerConfig
    storage: Storage
    metrics: Metrics
    supervisor: Supervisor
    offloader: Offloader

    @property
    def keyspace(self) -> Keyspace: ...

    @property
    def disk(self) -> StateReader | None: ...

    @property
    def running(self) -> bool: ...


class Checkpointer:
    def __init__(self, host: CheckpointHost) -> None:
        self._host = host
        #: key -> seq of its oldest logged record not yet folded into a checkpoint, oldest first
        self.dirty: dict[str, int] = {}
        #: key -> [bytes of its last checkpointed state, bytes logged for it since], for big states only
        self.big_states: dict[str, list[int]] = {}
        #: every logged change counts here: how an off-loop checkpoint tells that its key changed meanwhile
        self.changes = ChangeCounter()
        #: keys whose checkpoint is being encoded off the loop -> its task
        self.encoding: dict[str, asyncio.Task[None]] = {}
        self._discarded: dict[str, int] = {}  # key -> its last encodes discarded (changed meanwhile) in a row
        self._retry_at: dict[str, float] = {}  # key -> loop time before which a discarded encode is not retried
        self._backfill_after = ""  # where `backfill_digests` goes on from
        #: what times the slices of a round (`loop_slices.TimeSlices`): walltime, as the loop's is; tests set their own
        self.slice_clock: Callable[[], float] = time.perf_counter

    def logged(self, key: str, seq: int, size: int) -> None:
        """A durable record of ``size`` bytes for ``key`` was queued at ``seq``."""
        self.dirty.setdefault(key, seq)
        big = self.big_states.get(key)
        if big is not None:
            big[1] += size

    def received_big(self, key: str, size: int) -> None:
        """``key`` merged a received state of ``size`` encoded bytes: at least that big now, so its checkpoint goes
        off the loop."""
        if size >= BIG_STATE_BYTES and key not in self.big_states:
            self.big_states[key] = [size, 0]

    def stop(self) -> None:
        """Cancels the encodes under way (their keys stay dirty: the final checkpoint folds them)."""
        for task in self.encoding.values():
            task.cancel()

    def checkpoint(self, max_keys: int, *, everything: bool = False) -> int:
        """Queues full states for up to `max_keys` dirty keys (those dirty longest first), then drops the log below
        the new low-water mark. Bounded work per call; a state holds every delta logged for its key so far.

        A key with a big state waits (unless `everything`) until the deltas it logged since its last checkpoint add
        up to half that state, or until its oldest unfolded record is `checkpoint_max_log_records` behind: folding
        a million-element set costs a full encode on the event loop, and one add per round must not trigger it
        each round. So the bytes written by checkpoints stay within twice the bytes logged, and the log stays
        bounded (the waiting key holds the low-water mark meanwhile).
        """
        keyspace = self._host.keyspace
        dirty = self.dirty
        oldest_allowed = self._host.storage.last_seq - self._host.config.checkpoint_max_log_records
        rows: list[tuple[str, Entry, bytes, bool, DigestColumns]] = []
        for key, first_seq in list(islice(dirty.items(), 4 * max_keys)):  # bounded, even past many waiting keys
            if len(rows) == max_keys:
                break
            big = self.big_states.get(key)
            if big is not None and not everything and 2 * big[1] < big[0] and first_seq > oldest_allowed:
                continue
            if big is not None and not everything and (
                    key in self.encoding or self._off_loop(key, pressed=first_seq <= oldest_allowed)):
                continue
            del dirty[key]
            entry = keyspace.entry(key)
            assert entry is not None, "a logged key is never dropped from the keyspace"
            state = entry.state
            blob = encode(state)
            rows.append((key, entry, compressed(blob), state.is_empty(), digest_columns(key, entry.type_name, blob)))
            if len(blob) >= BIG_STATE_BYTES:
                self.big_states[key] = [len(blob), 0]
            elif big is not None:
                del self.big_states[key]
        self._queue_checkpoints(rows)
        return len(rows)

    def _queue_checkpoints(self, rows: list[tuple[str, Entry, bytes, bool, DigestColumns]]) -> None:
        """Queues each (key, entry, stored bytes, empty, digest columns), whose key has left `_dirty`, and drops the
        log below the new low-water mark."""
        if not rows:
            return
        keyspace = self._host.keyspace
        # the hash tree over the stored digests hears of them before any is queued (`state_writes`)
        keyspace.storing([(key, columns.digest, columns.size) for key, _, _, _, columns in rows])
        # stored: big states deflated, a third of the disk
        commit = self._host.storage.checkpoint_many([(key, StateRow(entry.type_name, stored, empty, columns.digest,
                                                                    columns.size, columns.leaf))
                                                     for key, entry, stored, empty, columns in rows])
        when_committed(keyspace, commit, [(key, stored, columns.digest) for key, _, stored, _, columns in rows])
        for _, entry, stored, _, _ in rows:
            entry.stored(stored)  # clean now: the cache may drop its decoded form (and, once committed, the key)
        self._host.storage.truncate_log(next(iter(self.dirty.values()), self._host.storage.last_seq + 1))
        self._host.metrics.checkpoints.inc(amount=len(rows))

    def backfill_digests(self, max_keys: int) -> int:
        """Stores the digest columns of up to ``max_keys`` rows written without them (a data directory from before
        they existed, or raw rows), rewriting each row as it is, so that the hash tree counts them (see
        `merkle.StoredTree`). A key held in memory is skipped: it may have a newer state, or a write of one under
        way, and its next checkpoint writes the columns. Returns how many rows were queued."""
        disk = self._host.disk
        if disk is None:
            return 0
        keyspace = self._host.keyspace
        rows = disk.undigested(self._backfill_after, max_keys)
        self._backfill_after = rows[-1][0] if len(rows) == max_keys else ""  # from the start again when done
        cold = [row for row in rows if not keyspace.entry_in_memory(row[0])]
        write_stored(self._host.storage, keyspace, cold)
        return len(cold)

    def checkpoint_round(self) -> int:
        """One round of the background checkpointer: `checkpoint_batch_keys` keys, or four times that while the log
        spans `checkpoint_max_log_records` records or more (writes touch more distinct keys than the rounds fold,
        and a restart would replay the whole span)."""
        self._host.keyspace.cache.shrink(EVICTIONS_PER_ROUND)
        if not self._host.storage.healthy:
            return 0
        self.backfill_digests(BACKFILL_PER_ROUND)
        keys = self._round_keys()
        return self.checkpoint(keys) if keys else 0

    def _round_keys(self) -> int:
        """How many keys this round folds (see `checkpoint_round`); 0 when there is nothing it may fold."""
        if not self.dirty or not self._host.storage.healthy:
            return 0
        config = self._host.config
        keys = config.checkpoint_batch_keys
        if self._host.storage.last_seq - next(iter(self.dirty.values())) >= config.checkpoint_max_log_records:
            keys *= 4
        return keys

    def backlogged(self) -> bool:
        """Whether the keys changed since their last checkpoint hold more memory than `DIRTY_SHARE_OF_CACHE` of the
        cache's budget. Those stay decoded in memory whatever the budget (only a checkpointed key can leave), so a
        write load faster than the rounds would otherwise grow memory with every key it touches."""
        limit = self._host.keyspace.cache.limit_bytes
        return limit is not None and len(self.dirty) * UNKNOWN_STATE_BYTES > limit * DIRTY_SHARE_OF_CACHE

    async def drain_backlog(self) -> int:
        """While `backlogged`, more checkpoints (and evictions) between the rounds, in slices that give the loop
        back: a slice works as long as the rest of the loop ran since the previous one (the write load and the
        checkpointer share the loop instead of the load outrunning it), at most `MAX_SLICE_S` (the stall a slice
        may add), in steps of `checkpoint_batch_keys` keys. At most `checkpoint_interval_s` of this (then the next
        round, with its other chores, comes first). Returns the keys checkpointed."""
        done = 0
        loop = asyncio.get_running_loop()
        until = loop.time() + self._host.config.checkpoint_interval_s
        slice_end = loop.time()
        while self.backlogged() and self._host.storage.healthy and loop.time() < until:
            await asyncio.sleep(0)
            started = loop.time()
            slice_until = started + min(MAX_SLICE_S, max(started - slice_end, 0.001))
            folded = 0
            while True:
                step = self.checkpoint(self._host.config.checkpoint_batch_keys)
                folded += step
                if not step or loop.time() >= slice_until or not self.backlogged():
                    break
            await self._shrink(EVICTIONS_PER_SLICE, TimeSlices(clock=self.slice_clock))
            slice_end = loop.time()
            if not folded:  # only big states waiting for more of their deltas: the rounds take them in time
                break
            done += folded
        return done

    async def round_in_slices(self) -> int:
        """`checkpoint_round` in time slices (`loop_slices.TimeSlices`, `CHECKPOINT_STEP_KEYS` keys a step) with the
        loop free between them, and on past its count while its slices have taken less than `ROUND_BUDGET_S` of the
        loop: 64 keys a round drained what a bulk load of 40k keys left at 250 keys/s, leaving an idle node minutes
        of log to replay and keys to hold. (A round of 256 small keys held the loop 50-90 ms under a write load;
        slices of a fixed 16 keys, 20-30 ms at 1M keys.) Its evictions go in steps too."""
        slices = TimeSlices(clock=self.slice_clock)
        await self._shrink(EVICTIONS_PER_ROUND, slices)
        if self._host.storage.healthy:
            self.backfill_digests(BACKFILL_PER_ROUND)
        left = self._round_keys()
        done = 0
        spent = 0.0
        clock = self.slice_clock
        while (left > 0 or spent < ROUND_BUDGET_S) and self.dirty and self._host.storage.healthy \
                and self._host.running:
            await slices.checkpoint()
            started = clock()
            folded = self.checkpoint(min(CHECKPOINT_STEP_KEYS, left) if left > 0 else CHECKPOINT_STEP_KEYS)
            spent += clock() - started
            if folded == 0:
                break
            done += folded
            left -= folded
        return done

    async def _shrink(self, evictions: int, slices: TimeSlices) -> None:
        """`StateCache.shrink` looking at up to ``evictions`` states, `EVICTION_STEP` a step, in ``slices``, while the
        cache is over its budget."""
        cache = self._host.keyspace.cache
        while evictions > 0 and cache.limit_bytes is not None and cache.bytes > cache.limit_bytes:
            await slices.checkpoint()
            step = min(EVICTION_STEP, evictions)
            cache.shrink(step)
            evictions -= step

    def _off_loop(self, key: str, *, pressed: bool) -> bool:
        """Starts encoding a big state's checkpoint on the offloader's worker (a million-element set costs half a
        second to encode and deflate); False when it must be done inline now: offloading is off, or the log is
        ``pressed`` (the key's oldest record is `checkpoint_max_log_records` behind) and the key changed under its
        last `MAX_DISCARDED_ENCODES` attempts (a key written more often than its encode takes must still fold, or
        the log would grow without bound: that fold costs the loop what it did before this offloading). The worker
        reads the live state while the loop may change it: any change logged meanwhile (`_changes`) discards the
        result, so what is stored is always the state as one instant saw it."""
        if not self._host.offloader.enabled or (pressed and self._discarded.get(key, 0) >= MAX_DISCARDED_ENCODES):
            self._discarded.pop(key, None)
            self._retry_at.pop(key, None)
            return False
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at.get(key, 0.0):
            return True  # its last encode was discarded lately: not again yet (see `_encode_off_loop`)
        entry = self._host.keyspace.entry(key)
        assert entry is not None, "a logged key is never dropped from the keyspace"
        mark = self.changes.watch(key)
        task = asyncio.get_running_loop().create_task(self._encode_off_loop(key, entry.type_name, entry.state, mark))
        self.encoding[key] = task
        self._host.supervisor.watch("checkpointer", task)
        return True

    async def _encode_off_loop(self, key: str, type_name: str, state: Any, mark: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            try:
                blob, stored, columns = await self._host.offloader.run(_encode_for_checkpoint, key, type_name, state)
            except Exception:
                if not self.changes.changed_since(key, mark):
                    raise
                blob = b""  # the loop changed the state under the encoder: discarded below
            if self.changes.changed_since(key, mark) or key not in self.dirty or not self._host.running:
                # a key changing faster than it encodes: wait twice the encode's time before the next attempt, so
                # the worker (and the GIL it holds) is not kept busy for nothing
                self._discarded[key] = self._discarded.get(key, 0) + 1
                self._retry_at[key] = loop.time() + 2 * (loop.time() - started)
                return
            self._discarded.pop(key, None)
            self._retry_at.pop(key, None)
            del self.dirty[key]
            entry = self._host.keyspace.entry(key)
            assert entry is not None, "a logged key is never dropped from the keyspace"
            self._queue_checkpoints([(key, entry, stored, state.is_empty(), columns)])
            self.big_states[key] = [len(blob), 0]
        finally:
            self.changes.unwatch(key)
            self.encoding.pop(key, None)


#: an off-loop checkpoint encode discarded this many times in a row (its key kept changing) is done inline next,
#: once the log is pressed
MAX_DISCARDED_ENCODES = 3
#: keys a checkpoint step folds between two looks at the clock (a small state's encode and deflate: 50-300 us; each
#: step also reads the stored digests its keys replace in one statement, so smaller steps fold fewer keys a second:
#: steps of 8 here and in `drain_backlog` left a 1M-key load twice the backlog, and its node 691 MiB, not 350)
CHECKPOINT_STEP_KEYS = 16
#: decoded states the cache drops in one step between two looks at the clock (a key leaving memory: 5-10 us)
EVICTION_STEP = 256


def _encode_for_checkpoint(key: str, type_name: str, state: Any) -> tuple[bytes, bytes, DigestColumns]:
    """The worker's part of a checkpoint: the state's bytes, those deflated (what storage keeps), and the digest
    columns stored beside them."""
    blob = encode(state)
    return blob, compressed(blob), digest_columns(key, type_name, blob)
