"""`Node`: the embeddable runtime (keyspace + durable storage + HLC + replication), usable without HTTP.

    async with Node(ServerConfig(in_memory=True)) as node:
        result = await node.update("visits", Increment(amount=1))
        item = await node.read("visits")

Guarantees:
- An update is in the keyspace and durably logged before `update` returns (acknowledged = on disk).
- A read never shows a local write that is not yet durable: it waits for the commit of the key's latest write.
- A retried `op_id` (per key) returns the first result and is applied once; results are kept for
  `config.op_id_retention` ops, on disk too.
- Received deltas (`merge_remote`) are durable before it returns, like local ones.

The HTTP layer (`server.http_api`) is a thin translation over these methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import Any

import msgpack

from crdt import CRDTError, decode, encode
from server.config import ServerConfig
from server.consistency import Consistency, Level
from server.errors import InvalidOperationError, NodeNotRunningError, StorageCorruptError
from server.hlc_source import HLCSource, wall_clock_ms
from server.keyspace import Item, KeyPage, Keyspace
from server.metrics import Metrics
from server.standalone import Replication, Standalone
from server.storage import Recovered, Storage
from server.updates import Clear, Update
from server.values import TYPES, check_key

log = logging.getLogger(__name__)

#: a checkpointed state this big is not folded again on every round its key is dirty (see `Node.checkpoint`)
BIG_STATE_BYTES = 64 * 1024

_NOT_CACHED = object()


@dataclass(slots=True)
class Outcome:
    """A read's or write's item (None: absent, or emptied by a delete) and how many replicas took part, this node
    included, out of how many the consistency level asked for."""

    item: Item | None
    acks: int = 1
    required: int = 1

    @property
    def satisfied(self) -> bool:
        return self.acks >= self.required


@dataclass(slots=True)
class WriteResult(Outcome):
    replayed: bool = False  # True when this is the stored result of an earlier request with the same op_id


def _consume_failure(future: asyncio.Future[None]) -> None:
    """A failed commit nobody awaits is already reported by storage health; retrieve it so asyncio stays quiet."""
    if not future.cancelled():
        future.exception()


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
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.hlc = HLCSource(physical_ms, config.clock_offset_ms)
        self.replication: Replication = replication or Standalone()
        self.storage = Storage(
            None if config.in_memory else config.data_dir,
            op_retention=config.op_id_retention,
            on_commit=self.metrics.observe_commit,
        )
        self.node_id = config.node_id or ""
        self._keyspace: Keyspace | None = None
        self._running = False
        # key -> seq of its oldest logged record not yet folded into a checkpoint, oldest first: the first value is
        # the log's low-water mark (every record below it is in a checkpointed state)
        self._dirty: dict[str, int] = {}
        # key -> [bytes of its last checkpointed state, bytes logged for it since], for states of BIG_STATE_BYTES
        # and more only: such a key is folded again once what it logged adds up to half its state (see checkpoint)
        self._big_states: dict[str, list[int]] = {}
        self._last_write: dict[str, asyncio.Future[None]] = {}
        self._op_results: OrderedDict[tuple[str, str], Item | None] = OrderedDict()
        self._op_inflight: dict[tuple[str, str], asyncio.Future[WriteResult]] = {}
        self._checkpointer: asyncio.Task[None] | None = None
        self.metrics.keys.set_source(lambda: {(): len(self._keyspace) if self._keyspace is not None else 0})

    # -- lifecycle -------------------------------------------------------------------------------------------------

    @property
    def keyspace(self) -> Keyspace:
        if self._keyspace is None:
            raise NodeNotRunningError("node not started")
        return self._keyspace

    @property
    def running(self) -> bool:
        return self._running

    @property
    def ready(self) -> bool:
        return self._running and self.storage.healthy

    async def start(self) -> None:
        if self._running:
            return
        recovered = await self.storage.open()
        stored_id = recovered.meta.get("node_id")
        self.node_id = self.config.node_id or stored_id or derive_node_id()
        if self.node_id != stored_id:
            await self.storage.put_meta("node_id", self.node_id)
        self._keyspace = Keyspace(self.node_id, self.hlc)
        self._recover(recovered)
        self._running = True
        await self.replication.start(self)
        if self.storage.durable:
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())

    def _recover(self, recovered: Recovered) -> None:
        keyspace = self.keyspace
        try:
            for key, type_name, blob in recovered.states:
                keyspace.load(key, type_name, decode(blob))
            for seq, key, type_name, blob in recovered.deltas:
                keyspace.load(key, type_name, decode(blob))
                self._dirty.setdefault(key, seq)
            for key, op_id, blob in recovered.op_results:
                raw = msgpack.unpackb(blob)
                self._remember_op((key, op_id), None if raw is None else Item(**raw))
        except (CRDTError, ValueError, TypeError) as exc:
            raise StorageCorruptError(f"cannot recover: {exc}") from exc
        log.info("node %s recovered %d keys (%d states, %d logged deltas)", self.node_id, len(keyspace),
                 len(recovered.states), len(recovered.deltas))

    async def stop(self) -> None:
        """Stops replication, folds every dirty key into a checkpoint, flushes and closes storage."""
        if not self._running:
            return
        self._running = False
        await self.replication.stop()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
        if self.storage.durable and self.storage.healthy:
            self.checkpoint(len(self._dirty), everything=True)
        await self.storage.close()

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
        """Applies `update` locally, makes it durable, then waits for as many replicas as `consistency` asks."""
        self._check_running()
        check_key(key)
        if op_id is None:
            return await self._update(key, update, None, consistency or Consistency())
        op = (key, op_id)
        cached = self._op_results.get(op, _NOT_CACHED)
        if cached is not _NOT_CACHED:
            assert cached is None or isinstance(cached, Item)
            return WriteResult(cached, replayed=True)
        inflight = self._op_inflight.get(op)
        if inflight is not None:
            first = await asyncio.shield(inflight)
            return WriteResult(first.item, first.acks, first.required, replayed=True)
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._op_inflight[op] = future
        try:
            result = await self._update(key, update, op_id, consistency or Consistency())
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._op_inflight[op]

    async def delete(
        self, key: str, context: Any = None, *, op_id: str | None = None, consistency: Consistency | None = None
    ) -> WriteResult:
        """Observed-remove of the whole key (limited to `context`, a `CausalContext`, when given)."""
        return await self.update(key, Clear(context=context), op_id=op_id, consistency=consistency)

    async def _update(self, key: str, update: Update, op_id: str | None, consistency: Consistency) -> WriteResult:
        keyspace = self.keyspace
        durable = self.storage.durable
        item, delta, blob = keyspace.apply_local(key, update, encode_delta=durable)
        type_name = keyspace.type_of(key)
        assert type_name is not None
        written = self._log(key, type_name, blob)
        if op_id is not None:
            result = None if item is None else item.to_record()
            self.storage.put_op_result(key, op_id, msgpack.packb(result))
        await written
        if op_id is not None:
            self._remember_op((key, op_id), item)
        level = consistency.level
        needed = 1 if level is Level.ONE else level.required(self.replication.cluster_size())
        acks = 1
        if needed > 1:
            acks += await self.replication.replicate(key, type_name, delta, needed - 1, consistency.timeout_s)
        return WriteResult(item, acks, needed)

    async def merge_remote(self, key: str, type_name: str, state_or_delta: Any, blob: bytes | None = None) -> None:
        """Joins a delta/state received from another node and returns once it is durable.

        `blob` is `crdt.encode(state_or_delta)` when the caller holds it (the received bytes it decoded, which
        decoding checked are canonical): then the log stores them as they are instead of encoding again.
        """
        await self._merge_and_log(key, type_name, state_or_delta, blob)

    def merge_remote_nowait(self, key: str, type_name: str, state_or_delta: Any, blob: bytes | None = None) -> None:
        """Joins a delta/state received by gossip or anti-entropy and logs it without waiting for the commit.

        Used where nothing is acknowledged to anyone (pushes, anti-entropy): if the process dies before the commit,
        the peer still holds the data and the next anti-entropy session brings it back. `blob` as in `merge_remote`.
        """
        self._merge_and_log(key, type_name, state_or_delta, blob).add_done_callback(_consume_failure)

    def _merge_and_log(self, key: str, type_name: str, state_or_delta: Any, blob: bytes | None) -> asyncio.Future[None]:
        self._check_running()
        if type_name not in TYPES:
            raise InvalidOperationError(f"unknown type {type_name!r}")
        self.keyspace.merge_remote(key, type_name, state_or_delta)
        return self._log(key, type_name, self._log_bytes(state_or_delta, blob))

    def _log_bytes(self, state_or_delta: Any, blob: bytes | None) -> bytes | None:
        if not self.storage.durable:
            return None
        return blob if blob is not None else encode(state_or_delta)

    def keys(self, prefix: str = "", after: str | None = None, limit: int = 100) -> KeyPage:
        self._check_running()
        return self.keyspace.page(prefix, after, limit)

    def members(self) -> list[dict[str, Any]]:
        return self.replication.members()

    # -- durability ------------------------------------------------------------------------------------------------

    def _log(self, key: str, type_name: str, blob: bytes | None) -> asyncio.Future[None]:
        """Queues an encoded delta (None in memory, where nothing is stored) and returns its commit's future."""
        future = self.storage.append_delta(key, type_name, blob or b"")
        if blob is not None:
            self._dirty.setdefault(key, self.storage.last_seq)
            big = self._big_states.get(key)
            if big is not None:
                big[1] += len(blob)
            self._last_write[key] = future  # settled entries are pruned by the checkpointer, not one callback each
        return future

    def _prune_settled_writes(self) -> None:
        if self._last_write:
            self._last_write = {key: f for key, f in self._last_write.items() if not f.done()}

    def _remember_op(self, op: tuple[str, str], item: Item | None) -> None:
        self._op_results[op] = item
        self._op_results.move_to_end(op)
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
        done = 0
        keyspace = self.keyspace
        dirty = self._dirty
        oldest_allowed = self.storage.last_seq - self.config.checkpoint_max_log_records
        for key, first_seq in list(islice(dirty.items(), 4 * max_keys)):  # bounded, even past many waiting keys
            if done == max_keys:
                break
            big = self._big_states.get(key)
            if big is not None and not everything and 2 * big[1] < big[0] and first_seq > oldest_allowed:
                continue
            del dirty[key]
            entry = keyspace.entry(key)
            assert entry is not None, "a logged key is never dropped from the keyspace"
            blob = encode(entry.state)
            self.storage.checkpoint(key, entry.type_name, blob)
            if len(blob) >= BIG_STATE_BYTES:
                self._big_states[key] = [len(blob), 0]
            elif big is not None:
                del self._big_states[key]
            done += 1
        if done:
            self.storage.truncate_log(next(iter(dirty.values()), self.storage.last_seq + 1))
        self.metrics.checkpoints.inc(amount=done)
        return done

    def checkpoint_round(self) -> int:
        """One round of the background checkpointer: `checkpoint_batch_keys` keys, or four times that while the log
        spans `checkpoint_max_log_records` records or more (writes touch more distinct keys than the rounds fold,
        and a restart would replay the whole span)."""
        if not self._dirty or not self.storage.healthy:
            return 0
        keys = self.config.checkpoint_batch_keys
        if self.storage.last_seq - next(iter(self._dirty.values())) >= self.config.checkpoint_max_log_records:
            keys *= 4
        return self.checkpoint(keys)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.checkpoint_interval_s)
            self._prune_settled_writes()
            self.checkpoint_round()
