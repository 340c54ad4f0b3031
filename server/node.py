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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from rumor.crdt import CRDTError, decode, encode
from rumor.crdt.encoding import compressed
from rumor.gossip.futures import retrieve_exception
from rumor.server.checkpointer import Checkpointer
from rumor.server.config import ServerConfig
from rumor.server.consistency import Consistency, Level
from rumor.server.disk_index import StateReader
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
from rumor.server.loop_slices import SLICE_S, TimeSlices
from rumor.server.metrics import Metrics
from rumor.server.offload import Offloader
from rumor.server.op_folding import OpFolder
from rumor.server.replication.seam import Replication, Standalone
from rumor.server.state_writes import install_stored
from rumor.server.storage import Recovered, Storage
from rumor.server.supervisor import Supervisor
from rumor.server.updates import Clear, Update, request_fingerprint
from rumor.server.values import TYPES, check_key
from rumor.server.watch import LOCAL, PEER, ChangeFeed
from rumor.server.write_results import AppliedWrite, OpRecord, Outcome, WriteResult

log = logging.getLogger(__name__)

_NOT_CACHED = object()
#: how long `update_batch` applies writes before it lets the loop run other work (a slice of 100 small writes to
#: cold keys took 20-50 ms on the loop, and so delayed every timer and probe answer by as much): the same budget
#: as the node's background work (`loop_slices`)
BATCH_SLICE_S = SLICE_S
#: writes `update_batch` applies between two looks at the clock, their cold keys read in one statement
BATCH_CHUNK_WRITES = 8


def _chunked(writes: Sequence[tuple[str, Update, str | None]]) -> \
        Iterator[tuple[str, Update, str | None, list[str] | None]]:
    """Each write with, on the first of every `BATCH_CHUNK_WRITES`, the keys of its chunk (None on the others)."""
    for start in range(0, len(writes), BATCH_CHUNK_WRITES):
        chunk = writes[start : start + BATCH_CHUNK_WRITES]
        keys: list[str] | None = [key for key, _, _ in chunk]
        for key, update, op_id in chunk:
            yield key, update, op_id, keys
            keys = None


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
        offloader: Offloader | None = None,
    ) -> None:
        self.config = config
        #: encodes big states for checkpoints off the event loop (`server.checkpointer`); ``enabled=False`` inline
        self.offloader = offloader or Offloader()
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
        self._feed: ChangeFeed | None = None
        #: the data directory's small named values as found at start (node id, known cluster members, ...)
        self.stored_meta: dict[str, str] = {}
        self._running = False
        #: folds changed keys into checkpoints, sharing the loop (`server.checkpointer`)
        self.checkpointer = Checkpointer(self)
        self._last_write: dict[str, asyncio.Future[None]] = {}
        # op_id -> the request it named and its result; op_ids are unique across keys (see `update`)
        self._op_results: OrderedDict[str, OpRecord] = OrderedDict()
        self._op_inflight: dict[str, tuple[str, str, asyncio.Future[WriteResult]]] = {}
        self.metrics.keys.set_source(lambda: {(): len(self._keyspace) if self._keyspace is not None else 0})
        self.metrics.checkpoint_backlog.set_source(lambda: {(): len(self.checkpointer.dirty)})
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
    def disk(self) -> StateReader | None:
        """The read side of the states table (None in memory or before start)."""
        return self._disk

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
                self.checkpointer.dirty.setdefault(key, seq)
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
            self.checkpointer.stop()
            self.offloader.close()
            if self.storage.durable and self.storage.healthy:
                try:
                    self.checkpoint(len(self.checkpointer.dirty), everything=True)
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
        """Applies each `(key, update, op_id)` in order, as `update` does, then waits once for them all. They are
        applied in slices of `BATCH_SLICE_S` with the loop free between them, so a big batch does not hold probe
        answers, timers and other requests behind it; their records join the group commits the storage writer
        makes meanwhile (one, for a batch that fits one slice). A write refused on its own (a
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
        slices = TimeSlices(BATCH_SLICE_S)
        for key, update, op_id, first_of_chunk in _chunked(writes):
            if first_of_chunk is not None:
                if started:
                    await slices.checkpoint()
                self.keyspace.prefetch(first_of_chunk)  # cold keys in one read, not a point read each
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
        if blob is not None:
            self.checkpointer.received_big(key, len(blob))
        return self._log(key, type_name, blob, PEER)

    def adopt_remote_nowait(self, key: str, type_name: str, joined: Any, blob: bytes) -> None:
        """`merge_remote_nowait` of a received state whose join with the key's state (``joined``) replication made
        off the event loop (`Keyspace.adopt_joined`). ``blob`` is the received state's bytes: what the log keeps,
        since merged on top of the key's earlier records it makes ``joined`` again."""
        self._check_running()
        if type_name not in TYPES:
            raise InvalidOperationError(f"unknown type {type_name!r}")
        self.keyspace.adopt_joined(key, type_name, joined)
        if self.storage.durable:
            self.checkpointer.received_big(key, len(blob))
        self._log(key, type_name, blob, PEER).add_done_callback(retrieve_exception)

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
        self.checkpointer.changes.changed(key)
        if self._feed is not None:
            self._feed.logged(key, self.storage.last_seq, origin, future)
        if blob is not None and self.storage.durable:
            self.checkpointer.logged(key, self.storage.last_seq, len(blob))
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
        """`Checkpointer.checkpoint`: queues full states for up to `max_keys` dirty keys; returns how many."""
        return self.checkpointer.checkpoint(max_keys, everything=everything)

    def checkpoint_round(self) -> int:
        """One round of the background checkpointer, all at once (`Checkpointer.checkpoint_round`)."""
        return self.checkpointer.checkpoint_round()

    async def _checkpoint_loop(self) -> None:
        """Runs under the supervisor until cancelled: an exception ends this run, and the supervisor restarts it."""
        while True:
            await asyncio.sleep(self.config.checkpoint_interval_s)
            self._prune_settled_writes()
            await self.checkpointer.round_in_slices()
            await self.checkpointer.drain_backlog()

    def install_stored(self, rows: Sequence[tuple[str, str, bytes]]) -> asyncio.Future[None] | None:
        """A bulk install of raw (key, type name, stored bytes) rows straight to the states table, for the keys this
        node does not hold (`Keyspace.install_stored`; a row of a key held here is skipped: the caller merges it the
        usual way). Returns the commit's future (None when no row was taken). Nothing is logged: each row is one
        checkpointed state, written in one transaction with the others queued meanwhile; the keyspace holds the
        bytes until the commit, then lets them go. No listener is told (the caller marks digests)."""
        self._check_running()
        return install_stored(self.storage, self.keyspace, rows)[1]
