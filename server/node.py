"""`Node`: the embeddable runtime (keyspace + durable storage + HLC + replication), usable without HTTP.

    async with Node(ServerConfig(in_memory=True)) as node:
        result = await node.update("visits", Increment(amount=1))
        item = await node.read("visits")

Guarantees:
- An update is in the keyspace and durably logged before `update` returns (acknowledged = on disk).
- A read never shows a local write that is not yet durable: it waits for the commit of the key's latest write.
- A retried `op_id` returns the first result and is applied once; the same op_id with another request (key, type or
  body) is refused. Results are kept for `config.op_id_retention` ops, on disk too.
- Received deltas (`merge_remote`) are durable before it returns, like local ones.

The HTTP layer (`server.http_api`) is a thin translation over these methods.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from types import TracebackType
from typing import Any

from rumor.crdt import CRDTError, decode, encode
from rumor.crdt.encoding import compressed
from rumor.gossip.futures import retrieve_exception
from rumor.server.config import ServerConfig
from rumor.server.consistency import Consistency, Level
from rumor.server.disk_index import DigestColumns, StateReader, digest_columns
from rumor.server.errors import (
    InvalidOperationError,
    NodeNotRunningError,
    OpIdConflictError,
    ServerError,
    StorageCorruptError,
    StorageError,
    TypeConflictError,
)
from rumor.server.hlc_source import HLCSource, wall_clock_ms
from rumor.server.keyspace import Item, KeyPage, Keyspace
from rumor.server.loop_lag import LoopLagMonitor
from rumor.server.metrics import Metrics
from rumor.server.op_folding import OpFolder
from rumor.server.replication.seam import Replication, Standalone
from rumor.server.state_cache import UNKNOWN_STATE_BYTES, Entry
from rumor.server.state_writes import CommitWatch, write_stored
from rumor.server.storage import Recovered, Storage
from rumor.server.supervisor import Supervisor
from rumor.server.updates import Clear, Update, request_fingerprint
from rumor.server.values import TYPES, check_key
from rumor.server.watch import LOCAL, PEER, ChangeFeed
from rumor.server.write_results import AppliedWrite, OpRecord, Outcome, WriteResult

log = logging.getLogger(__name__)

#: a checkpointed state this big is not folded again on every round its key is dirty (see `Node.checkpoint`)
BIG_STATE_BYTES = 64 * 1024
#: decoded states the checkpointer may drop a round to keep within `state_cache_bytes` (`server.state_cache`)
EVICTIONS_PER_ROUND = 4096
#: rows stored without digest columns that a checkpoint round gives them (`Node.backfill_digests`)
BACKFILL_PER_ROUND = 1024
#: the share of `state_cache_bytes` that keys not checkpointed yet may take before the checkpointer works between
#: its rounds too (`Node.drain_backlog`), and the evictions it makes after each slice of that work
DIRTY_SHARE_OF_CACHE = 0.5
EVICTIONS_PER_SLICE = 1024
MAX_SLICE_S = 0.015

_NOT_CACHED = object()


def derive_node_id() -> str:
    """Readable and unique enough: the host name plus 48 random bits."""
    host = socket.gethostname().split(".")[0] or "node"
    return f"{host}-{secrets.token_hex(6)}"


class Node:
    def __init__(
        self,
        config: ServerConfig,
        *,
        physical_ms: Callable[[], int] = wall_clock_ms,
        replication: Replication | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        # Runs the checkpointer and the replication layer's background work: a failure there is logged, counted,
        # shown by /health and restarted, never silent (see `server.supervisor`).
        self.supervisor = supervisor or Supervisor()
        self.hlc = HLCSource(physical_ms, config.clock_offset_ms)
        self.replication: Replication = replication or Standalone()
        self.storage = Storage(
            None if config.in_memory else config.data_dir,
            op_retention=config.op_id_retention,
            on_commit=self.metrics.observe_commit,
        )
        self.node_id = config.node_id or ""
        self._keyspace: Keyspace | None = None
        #: the read side of the states table (None in memory): what the keyspace reads cold keys from
        self._disk: StateReader | None = None
        #: where `backfill_digests` goes on from
        self._backfill_after = ""
        self._feed: ChangeFeed | None = None
        #: the data directory's small named values as found at start (node id, known cluster members, ...)
        self.stored_meta: dict[str, str] = {}
        self._running = False
        # key -> seq of its oldest logged record not yet folded into a checkpoint, oldest first: the first value is
        # the log's low-water mark (every record below it is in a checkpointed state)
        self._dirty: dict[str, int] = {}
        # key -> [bytes of its last checkpointed state, bytes logged for it since], for states of BIG_STATE_BYTES
        # and more only: such a key is folded again once what it logged adds up to half its state (see checkpoint)
        self._big_states: dict[str, list[int]] = {}
        self._last_write: dict[str, asyncio.Future[None]] = {}
        # op_id -> the request it named and its result; op_ids are unique across keys (see `update`)
        self._op_results: OrderedDict[str, OpRecord] = OrderedDict()
        self._op_inflight: dict[str, tuple[str, str, asyncio.Future[WriteResult]]] = {}
        self.metrics.keys.set_source(lambda: {(): len(self._keyspace) if self._keyspace is not None else 0})
        self.metrics.background_failures.set_source(
            lambda: {(name,): n for name, n in self.supervisor.failure_counts().items()})

    # -- lifecycle -------------------------------------------------------------------------------------------------

    @property
    def keyspace(self) -> Keyspace:
        if self._keyspace is None:
            raise NodeNotRunningError("node not started")
        return self._keyspace

    @property
    def feed(self) -> ChangeFeed:
        """The change feed (`server.watch`): every logged change, local or received, for `GET /v1/watch`."""
        if self._feed is None:
            raise NodeNotRunningError("node not started")
        return self._feed

    @property
    def running(self) -> bool:
        return self._running

    @property
    def ready(self) -> bool:
        """Started, storage healthy, and no background component failed lately: what /health answers 200 for."""
        return not self.failing()

    def failing(self) -> dict[str, str]:
        """What keeps the node from being ready, as {component: one-line reason}; empty when it is ready."""
        failing: dict[str, str] = {}
        if not self._running:
            failing["node"] = "not running"
        storage_failure = self.storage.failure
        if storage_failure is not None:
            failing["storage"] = storage_failure
        failing.update(self.supervisor.failing())
        return failing

    async def start(self) -> None:
        if self._running:
            return
        recovered = await self.storage.open()
        self.stored_meta = recovered.meta
        stored_id = recovered.meta.get("node_id")
        self.node_id = self.config.node_id or stored_id or derive_node_id()
        if self.node_id != stored_id:
            await self.storage.put_meta("node_id", self.node_id)
        database = self.storage.database
        self._disk = None if database is None else StateReader(database)
        self._keyspace = Keyspace(self.node_id, self.hlc, op_keyed_increments=self.config.wire_version >= 2,
                                  cache_bytes=self.config.state_cache_bytes if self.storage.durable else None,
                                  disk=self._disk)
        self._recover(recovered)
        self._feed = await ChangeFeed.open(self.node_id, self.storage, recovered, self._keyspace,
                                           uncommitted=self._uncommitted, on_failure=self.supervisor.report)
        self._running = True
        try:
            await self.replication.start(self)
        except BaseException:  # a gossip port in use, say: leave nothing open behind the error
            await self.stop()
            raise
        if self.storage.durable:
            self.supervisor.supervise("checkpointer", self._checkpoint_loop)
        self.supervisor.supervise("op_folder", OpFolder(self).run)
        self.supervisor.supervise("loop_lag", LoopLagMonitor(self.metrics.loop_lag, self.metrics.loop_lag_max).run)

    def _recover(self, recovered: Recovered) -> None:
        keyspace = self.keyspace  # checkpointed states stay on disk, read when used (`server.disk_index`)
        try:
            for seq, key, type_name, blob in recovered.deltas:
                keyspace.load(key, type_name, decode(blob))
                self._dirty.setdefault(key, seq)
        except (CRDTError, ValueError, TypeError) as exc:
            raise StorageCorruptError(f"cannot recover: {exc}") from exc
        unreadable = 0
        for key, op_id, blob in recovered.op_results:
            try:
                self._remember_op(op_id, OpRecord.from_stored(key, blob))
            except (ValueError, TypeError):  # a replay cache, not data: a record it cannot read is a retry re-applied
                unreadable += 1
        if unreadable:
            log.warning("node %s: %d stored op_id results could not be read and were skipped", self.node_id,
                        unreadable)
        log.info("node %s recovered %d keys (%d logged deltas)", self.node_id, len(keyspace), len(recovered.deltas))

    async def stop(self) -> None:
        """Stops replication and background work, folds every dirty key into a checkpoint, flushes and closes storage.

        Storage is flushed and closed whatever failed before it (each failure is logged, none raised): a failing
        leave announcement must not cost the last acknowledged writes their clean close, nor the process its exit.
        """
        if not self._running:
            return
        self._running = False
        if self._feed is not None:
            self._feed.close()  # open watch streams end now, not when their clients give up
        try:
            try:
                await self.replication.stop()
            except Exception:
                log.exception("node %s: stopping replication failed; closing storage anyway", self.node_id)
            await self.supervisor.stop()
            if self.storage.durable and self.storage.healthy:
                try:
                    self.checkpoint(len(self._dirty), everything=True)
                except Exception:  # the log still holds every record: the next start replays it
                    log.exception("node %s: final checkpoint failed; the next start replays the log", self.node_id)
        finally:
            await self.storage.close()
            if self._disk is not None:
                self._disk.close()
                self._disk = None

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- reads and writes ------------------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._running:
            raise NodeNotRunningError("node is not running")

    async def read(self, key: str, consistency: Consistency | None = None) -> Item | None:
        """The key's value, or None. With r > 1 the replication layer first merges other replicas' states."""
        return (await self.read_outcome(key, consistency)).item

    async def read_outcome(self, key: str, consistency: Consistency | None = None) -> Outcome:
        """`read`, plus how many replicas' states it merged: fewer than required when they did not answer in time."""
        self._check_running()
        check_key(key)
        acks = needed = 1
        if consistency is not None and consistency.level is not Level.ONE:
            needed = consistency.level.required(self.replication.cluster_size())
            if needed > 1:
                acks += await self.replication.gather(key, needed - 1, consistency.timeout_s)
        pending = self._last_write.get(key)
        if pending is not None and not pending.done():
            await asyncio.shield(pending)
        return Outcome(self.keyspace.item(key), acks, needed)

    async def update(
        self, key: str, update: Update, *, op_id: str | None = None, consistency: Consistency | None = None
    ) -> WriteResult:
        """Applies `update` locally, makes it durable, then waits for as many replicas as `consistency` asks.

        An `op_id` names one request for good: a retry of that same request (same key, same update) returns the
        first result, applied once; the op_id with any other request raises `OpIdConflictError` rather than
        silently answering with the other request's result.
        """
        return await self._start_update(key, update, op_id, consistency or Consistency())

    async def update_batch(
        self, writes: Sequence[tuple[str, Update, str | None]], consistency: Consistency | None = None,
        *, items: bool = False,
    ) -> list[WriteResult | ServerError]:
        """Applies each `(key, update, op_id)` in order, as `update` does, then waits once for them all: they are
        applied within one loop iteration, so their records join one group commit. A write refused on its own (a
        bad key, a type conflict, an op_id reused for another request) is its `ServerError` in the result list and
        changes nothing; the others go ahead. A failed commit fails the whole batch (`StorageError`). Without
        `items`, results of writes without an op_id carry no item, only `present` (rendering each item is a third
        of a small update's cost)."""
        self._check_running()
        level = consistency or Consistency()
        bulk = level.level is Level.ONE
        apply = self._apply
        # per write: its AppliedWrite (the bulk: no task each, one commit for all), the awaitable of a write with an
        # op_id or a level (`waits` holds those), or the ServerError that refused it
        started: list[Awaitable[WriteResult] | AppliedWrite | ServerError] = []
        commits: dict[int, asyncio.Future[None]] = {}
        waits: list[Awaitable[WriteResult]] = []
        for key, update, op_id in writes:
            try:
                if op_id is None and bulk:
                    check_key(key)
                    applied = apply(key, update, None, render=items)
                    if applied.written is not None:
                        commits[id(applied.written)] = applied.written
                    started.append(applied)
                else:
                    waiting = self._start_update(key, update, op_id, level)
                    waits.append(waiting)
                    started.append(waiting)
            except ServerError as exc:
                started.append(exc)
        finished = iter(await asyncio.gather(*commits.values(), *waits, return_exceptions=True))
        for _ in commits:
            failed = next(finished)
            if isinstance(failed, BaseException):
                raise failed
        results: list[WriteResult | ServerError] = []
        for s in started:
            if type(s) is AppliedWrite:
                results.append(WriteResult(s.item, present=s.present))
                continue
            outcome = s if isinstance(s, ServerError) else next(finished)
            if (isinstance(outcome, BaseException) and not isinstance(outcome, ServerError)) \
                    or isinstance(outcome, StorageError):
                raise outcome
            assert isinstance(outcome, WriteResult | ServerError)
            results.append(outcome)
        return results

    def _start_update(self, key: str, update: Update, op_id: str | None,
                      consistency: Consistency) -> Awaitable[WriteResult]:
        """Everything of `update` that happens at once (checks, apply, queue its log record); the returned
        awaitable waits for the commit and the replicas. Raises, having changed nothing, if the write is refused."""
        self._check_running()
        check_key(key)
        if op_id is None:
            return self._finish(key, self._apply(key, update, None), consistency)
        fingerprint = request_fingerprint(key, update)
        known = self._op_results.get(op_id)
        if known is not None:
            if not known.same_request(key, fingerprint):
                raise OpIdConflictError(op_id, known.key)
            return self._replay(key, known.item, consistency)
        inflight = self._op_inflight.get(op_id)
        if inflight is not None:
            if inflight[:2] != (key, fingerprint):
                raise OpIdConflictError(op_id, inflight[0])
            return self._same_as(inflight[2])
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieve_exception)
        self._op_inflight[op_id] = (key, fingerprint, future)
        try:
            applied = self._apply(key, update, (op_id, fingerprint))
        except BaseException as exc:
            del self._op_inflight[op_id]
            future.set_exception(exc)
            raise
        return self._finish_op(op_id, future, key, applied, consistency)

    @staticmethod
    async def _same_as(first: asyncio.Future[WriteResult]) -> WriteResult:
        """A retry of an op_id still in flight: the first attempt's result, once it has one."""
        result = await asyncio.shield(first)
        return WriteResult(result.item, result.acks, result.required, replayed=True)

    async def _finish_op(self, op_id: str, future: asyncio.Future[WriteResult], key: str, applied: AppliedWrite,
                         consistency: Consistency) -> WriteResult:
        try:
            result = await self._finish(key, applied, consistency)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._op_inflight[op_id]

    async def delete(
        self, key: str, context: Any = None, *, op_id: str | None = None, consistency: Consistency | None = None,
        context_binding: bytes | None = None,
    ) -> WriteResult:
        """Observed-remove of the whole key (limited to `context`, a `CausalContext`, when given; `context_binding`
        names the key and type a client's context was read from)."""
        clear = Clear(context=context, context_binding=context_binding)
        return await self.update(key, clear, op_id=op_id, consistency=consistency)

    def _apply(self, key: str, update: Update, op: tuple[str, str] | None, *, render: bool = True) -> AppliedWrite:
        """Applies `update` and queues its log record (and op_id result); `op` is (op_id, request fingerprint)."""
        item, delta, blob = self.keyspace.apply_local(key, update, render=render or op is not None,
                                                      op_id=None if op is None else op[0])
        written = None
        if blob is not None:  # None: nothing changed and no key was made (a remove of what was never there)
            written = self._log(key, self.keyspace.type_of(key) or "", blob)
        record = None
        if op is not None:
            record = OpRecord(key, op[1], item)
            written = self.storage.put_op_result(key, op[0], record.stored())
        present = item is not None or (not render and self.keyspace.has_value(key))
        return AppliedWrite(item, delta if blob is not None else None, written, op[0] if op else None, record, present)

    async def _finish(self, key: str, applied: AppliedWrite, consistency: Consistency) -> WriteResult:
        """Waits for the write's commit, remembers its op_id result, then meets `consistency`."""
        if applied.written is not None:
            await applied.written
        if applied.record is not None:
            assert applied.op_id is not None
            self._remember_op(applied.op_id, applied.record)
        if consistency.level is Level.ONE:  # the default: nothing to wait for (and no coroutine to run for it)
            return WriteResult(applied.item)
        return await self._replicated(key, applied.item, applied.delta, consistency)

    async def _replicated(self, key: str, item: Item | None, delta: Any, consistency: Consistency,
                          *, replayed: bool = False) -> WriteResult:
        """Waits for as many replicas as `consistency` asks to hold `delta` durably (None: nothing to send)."""
        level = consistency.level
        needed = 1 if level is Level.ONE else level.required(self.replication.cluster_size())
        acks = 1
        type_name = self.keyspace.type_of(key)
        if needed > 1 and delta is not None and type_name is not None:
            acks += await self.replication.replicate(key, type_name, delta, needed - 1, consistency.timeout_s)
        return WriteResult(item, acks, needed, replayed=replayed)

    async def _replay(self, key: str, item: Item | None, consistency: Consistency) -> WriteResult:
        """The stored result of a retried op_id. Its level is met anew: the first attempt may have missed it (or
        its client never heard), so with w > 1 the key's current state, which holds that first write, is sent to
        the replicas and their acknowledgements counted, rather than claiming what was not seen."""
        entry = self.keyspace.entry(key)
        state = None if entry is None or consistency.level is Level.ONE else entry.state
        return await self._replicated(key, item, state, consistency, replayed=True)

    async def merge_remote(self, key: str, type_name: str, state_or_delta: Any, blob: bytes | None = None) -> None:
        """Joins a delta/state received from another node and returns once it is durable.

        `blob` is `crdt.encode(state_or_delta)` when the caller holds it (the received bytes it decoded, which
        decoding checked are canonical): then the log stores them as they are instead of encoding again.
        """
        await self._merge_and_log(key, type_name, state_or_delta, blob)

    def merge_remote_nowait(self, key: str, type_name: str, state_or_delta: Any, blob: bytes | None = None) -> None:
        """Joins a delta/state received by replication and queues it for the log without waiting for the commit.

        Pushes and anti-entropy acknowledge nothing: if the process dies first, the peer still holds the data and the
        next session brings it back. A REPL's acknowledgement waits for `Storage.flush`. `blob` as in `merge_remote`.
        """
        self._merge_and_log(key, type_name, state_or_delta, blob).add_done_callback(retrieve_exception)

    def _merge_and_log(self, key: str, type_name: str, state_or_delta: Any, blob: bytes | None) -> asyncio.Future[None]:
        """Encodes first (unless the received bytes are at hand), then merges: like a local write, a received delta
        that cannot be stored changes nothing."""
        self._check_running()
        if type_name not in TYPES:
            raise InvalidOperationError(f"unknown type {type_name!r}")
        if blob is None and self.storage.durable:
            blob = encode(state_or_delta)
        self.keyspace.merge_remote(key, type_name, state_or_delta)
        return self._log(key, type_name, blob, PEER)

    def join_imported(self, key: str, type_name: str, state: Any, blob: bytes) -> asyncio.Future[None] | None:
        """Joins a whole state read from a backup (`blob`, its bytes as read) into `key` as this node's own write:
        only what the node lacks of it (`delta_since` its context) is joined, logged and handed to replication, so
        nothing the node holds is lost, and an import that brings nothing new changes nothing, not even the log.
        Returns the commit's future, or None when there was nothing to join. A key of another type raises
        `TypeConflictError` and changes nothing (`server.backup` counts it)."""
        self._check_running()
        entry = self.keyspace.entry(key)
        if entry is not None and entry.type_name != type_name:
            raise TypeConflictError(key, entry.type_name, type_name)
        if entry is not None:
            state = state.delta_since(entry.state.context())
            if not state.is_bottom() and state.is_empty():
                # no entry the node lacks, only removes it may have applied already: try them on a copy (the import
                # decoded the whole state anyway, so this costs no more than that)
                trial = entry.state.copy()
                trial.merge(state)
                if trial == entry.state:
                    return None
            blob = b"" if state.is_bottom() else compressed(encode(state))
        if state.is_bottom():
            return None
        self.keyspace.join_local(key, type_name, state, blob)
        return self._log(key, type_name, blob)

    def keys(self, prefix: str = "", after: str | None = None, limit: int = 100) -> KeyPage:
        self._check_running()
        return self.keyspace.page(prefix, after, limit)

    def members(self) -> list[dict[str, Any]]:
        return self.replication.members()

    # -- durability ------------------------------------------------------------------------------------------------

    def _log(self, key: str, type_name: str, blob: bytes | None, origin: int = LOCAL) -> asyncio.Future[None]:
        """Queues an encoded delta and returns its commit's future (in memory, nothing is stored: already done).
        Every change goes through here, local or received (`origin`), so this is where the change feed hears of it."""
        future = self.storage.append_delta(key, type_name, blob or b"")
        if self._feed is not None:
            self._feed.logged(key, self.storage.last_seq, origin, future)
        if blob is not None and self.storage.durable:
            self._dirty.setdefault(key, self.storage.last_seq)
            big = self._big_states.get(key)
            if big is not None:
                big[1] += len(blob)
            self._last_write[key] = future  # settled entries are pruned by the checkpointer, not one callback each
        return future

    def _uncommitted(self, key: str) -> bool:
        """Whether `key`'s newest logged write still waits for its commit (what a read waits for first)."""
        pending = self._last_write.get(key)
        return pending is not None and not pending.done()

    def _prune_settled_writes(self) -> None:
        if self._last_write:
            self._last_write = {key: f for key, f in self._last_write.items() if not f.done()}

    def _remember_op(self, op_id: str, record: OpRecord) -> None:
        self._op_results[op_id] = record
        self._op_results.move_to_end(op_id)
        while len(self._op_results) > self.config.op_id_retention:
            self._op_results.popitem(last=False)

    def checkpoint(self, max_keys: int, *, everything: bool = False) -> int:
        """Queues full states for up to `max_keys` dirty keys (those dirty longest first), then drops the log below
        the new low-water mark. Bounded work per call; a state holds every delta logged for its key so far.

        A key with a big state waits (unless `everything`) until the deltas it logged since its last checkpoint add
        up to half that state, or until its oldest unfolded record is `checkpoint_max_log_records` behind: folding
        a million-element set costs a full encode on the event loop, and one add per round must not trigger it
        each round. So the bytes written by checkpoints stay within twice the bytes logged, and the log stays
        bounded (the waiting key holds the low-water mark meanwhile).
        """
        keyspace = self.keyspace
        dirty = self._dirty
        oldest_allowed = self.storage.last_seq - self.config.checkpoint_max_log_records
        rows: list[tuple[str, Entry, bytes, bool, DigestColumns]] = []
        for key, first_seq in list(islice(dirty.items(), 4 * max_keys)):  # bounded, even past many waiting keys
            if len(rows) == max_keys:
                break
            big = self._big_states.get(key)
            if big is not None and not everything and 2 * big[1] < big[0] and first_seq > oldest_allowed:
                continue
            del dirty[key]
            entry = keyspace.entry(key)
            assert entry is not None, "a logged key is never dropped from the keyspace"
            state = entry.state
            blob = encode(state)
            rows.append((key, entry, compressed(blob), state.is_empty(), digest_columns(key, entry.type_name, blob)))
            if len(blob) >= BIG_STATE_BYTES:
                self._big_states[key] = [len(blob), 0]
            elif big is not None:
                del self._big_states[key]
        # the hash tree over the stored digests hears of them before any is queued (`state_writes`)
        keyspace.storing([(key, columns.digest, columns.size) for key, _, _, _, columns in rows])
        written = CommitWatch(keyspace)
        for key, entry, stored, empty, columns in rows:  # stored: big states deflated, a third of the disk
            commit = self.storage.checkpoint(key, entry.type_name, stored, empty=empty, digest=columns.digest,
                                             size=columns.size, leaf=columns.leaf)
            written.add(commit, key, stored, columns.digest)
            entry.stored(stored)  # clean now: the cache may drop its decoded form (and, once committed, the key)
        done = len(rows)
        if done:
            self.storage.truncate_log(next(iter(dirty.values()), self.storage.last_seq + 1))
        written.watch()
        self.metrics.checkpoints.inc(amount=done)
        return done

    def install_stored(self, rows: Sequence[tuple[str, str, bytes]]) -> asyncio.Future[None] | None:
        """A bulk install of raw (key, type name, stored bytes) rows straight to the states table, for the keys this
        node does not hold (`Keyspace.install_stored`; a row of a key held here is skipped: the caller merges it the
        usual way). Returns the commit's future (None when no row was taken). Nothing is logged: each row is one
        checkpointed state, written in one transaction with the others queued meanwhile; the keyspace holds the
        bytes until the commit, then lets them go. No listener is told (the caller marks digests)."""
        self._check_running()
        taken = self.keyspace.install_stored(rows)
        if not taken:
            return None
        return write_stored(self.storage, self.keyspace, taken)

    def backfill_digests(self, max_keys: int) -> int:
        """Stores the digest columns of up to ``max_keys`` rows written without them (a data directory from before
        they existed, or raw rows), rewriting each row as it is, so that the hash tree counts them (see
        `merkle.StoredTree`). A key held in memory is skipped: it may have a newer state, or a write of one under
        way, and its next checkpoint writes the columns. Returns how many rows were queued."""
        disk = self._disk
        if disk is None:
            return 0
        keyspace = self.keyspace
        rows = disk.undigested(self._backfill_after, max_keys)
        self._backfill_after = rows[-1][0] if len(rows) == max_keys else ""  # from the start again when done
        cold = [row for row in rows if not keyspace.entry_in_memory(row[0])]
        write_stored(self.storage, keyspace, cold)
        return len(cold)

    def checkpoint_round(self) -> int:
        """One round of the background checkpointer: `checkpoint_batch_keys` keys, or four times that while the log
        spans `checkpoint_max_log_records` records or more (writes touch more distinct keys than the rounds fold,
        and a restart would replay the whole span)."""
        self.keyspace.cache.shrink(EVICTIONS_PER_ROUND)
        if not self.storage.healthy:
            return 0
        self.backfill_digests(BACKFILL_PER_ROUND)
        if not self._dirty:
            return 0
        keys = self.config.checkpoint_batch_keys
        if self.storage.last_seq - next(iter(self._dirty.values())) >= self.config.checkpoint_max_log_records:
            keys *= 4
        return self.checkpoint(keys)

    def backlogged(self) -> bool:
        """Whether the keys changed since their last checkpoint hold more memory than `DIRTY_SHARE_OF_CACHE` of the
        cache's budget. Those stay decoded in memory whatever the budget (only a checkpointed key can leave), so a
        write load faster than the rounds would otherwise grow memory with every key it touches."""
        limit = self.keyspace.cache.limit_bytes
        return limit is not None and len(self._dirty) * UNKNOWN_STATE_BYTES > limit * DIRTY_SHARE_OF_CACHE

    async def drain_backlog(self) -> int:
        """While `backlogged`, more checkpoints (and evictions) between the rounds, in slices that give the loop
        back: a slice works as long as the rest of the loop ran since the previous one (the write load and the
        checkpointer share the loop instead of the load outrunning it), at most `MAX_SLICE_S` (the stall a slice
        may add), in steps of `checkpoint_batch_keys` keys. At most `checkpoint_interval_s` of this (then the next
        round, with its other chores, comes first). Returns the keys checkpointed."""
        done = 0
        loop = asyncio.get_running_loop()
        until = loop.time() + self.config.checkpoint_interval_s
        slice_end = loop.time()
        while self.backlogged() and self.storage.healthy and loop.time() < until:
            await asyncio.sleep(0)
            started = loop.time()
            slice_until = started + min(MAX_SLICE_S, max(started - slice_end, 0.001))
            folded = 0
            while True:
                step = self.checkpoint(self.config.checkpoint_batch_keys)
                folded += step
                if not step or loop.time() >= slice_until or not self.backlogged():
                    break
            self.keyspace.cache.shrink(EVICTIONS_PER_SLICE)
            slice_end = loop.time()
            if not folded:  # only big states waiting for more of their deltas: the rounds take them in time
                break
            done += folded
        return done

    async def _checkpoint_loop(self) -> None:
        """Runs under the supervisor until cancelled: an exception ends this run, and the supervisor restarts it."""
        while True:
            await asyncio.sleep(self.config.checkpoint_interval_s)
            self._prune_settled_writes()
            self.checkpoint_round()
            await self.drain_backlog()
