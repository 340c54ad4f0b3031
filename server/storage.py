"""Durable storage: an append-only delta log plus checkpointed full states in SQLite (WAL), written by group commit.

Why this shape:
- A small update to a huge value (one add to a million-element set) must cost a small write, so the write path
  appends the *delta* to `deltas`; full states are written later by a background checkpointer, a bounded number of
  dirty keys per round, which also deletes the log rows the checkpointed state already contains.
- Recovery loads the checkpointed states, then merges the logged deltas in order. Merge is idempotent, so a crash
  between "write state" and "delete its log rows" (or a delta that is both in a state and in the log) is harmless.
- Group commit: records queue on the event loop; one commit at a time runs in a dedicated thread (the loop never
  blocks on fsync); everything that arrived while a commit ran goes into the next transaction. Each caller awaits the
  future of the batch holding its record: resolved = on disk.
- `synchronous=FULL`: in WAL mode NORMAL skips the fsync of the WAL at commit, so an acknowledged update could vanish
  on power loss (it only survives a process crash). "Acknowledged = durable" needs the fsync; group commit pays it
  once per batch, not once per update.

`Storage(None)` is the in-memory mode: the same interface, nothing written, every future already resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from server.errors import StorageError

DB_FILE = "rumor.sqlite3"
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY, type TEXT NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS deltas (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL, delta BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS deltas_by_key ON deltas (key, seq);
CREATE TABLE IF NOT EXISTS op_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, op_id TEXT NOT NULL, result BLOB NOT NULL,
    UNIQUE (key, op_id)
);
"""


@dataclass
class Recovered:
    """What was on disk at open, in the order recovery must apply it."""

    meta: dict[str, str] = field(default_factory=dict)
    #: (key, type name, encoded full state)
    states: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: (seq, key, type name, encoded delta), ascending seq
    deltas: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    #: (key, op_id, encoded result), oldest first
    op_results: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass
class _Batch:
    deltas: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    op_results: list[tuple[str, str, bytes]] = field(default_factory=list)
    checkpoints: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.deltas) + len(self.op_results) + len(self.checkpoints) + len(self.meta)


class _SQLiteFile:
    """The blocking half: only ever called from the storage thread."""

    def __init__(self, data_dir: Path, op_retention: int) -> None:
        self._data_dir = data_dir
        self._op_retention = op_retention
        self._conn: sqlite3.Connection | None = None

    def open(self) -> Recovered:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._data_dir / DB_FILE, isolation_level=None)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        return Recovered(
            meta=dict(conn.execute("SELECT name, value FROM meta")),
            states=list(conn.execute("SELECT key, type, state FROM states")),
            deltas=list(conn.execute("SELECT seq, key, type, delta FROM deltas ORDER BY seq")),
            op_results=list(conn.execute("SELECT key, op_id, result FROM op_results ORDER BY id")),
        )

    def write(self, batch: _Batch) -> None:
        conn = self._conn
        assert conn is not None, "write before open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO deltas (seq, key, type, delta) VALUES (?, ?, ?, ?)", batch.deltas)
            if batch.op_results:
                conn.executemany(
                    "INSERT OR REPLACE INTO op_results (key, op_id, result) VALUES (?, ?, ?)", batch.op_results
                )
                conn.execute(
                    "DELETE FROM op_results WHERE id <= (SELECT MAX(id) FROM op_results) - ?", (self._op_retention,)
                )
            for key, (type_name, state, upto_seq) in batch.checkpoints.items():
                conn.execute(
                    "INSERT OR REPLACE INTO states (key, type, state) VALUES (?, ?, ?)", (key, type_name, state)
                )
                conn.execute("DELETE FROM deltas WHERE key = ? AND seq <= ?", (key, upto_seq))
            conn.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", batch.meta.items())
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Storage:
    """Asyncio-side group-commit writer over `_SQLiteFile` (or over nothing, in memory).

    Queueing is synchronous and returns the future of the batch the record joined, so a caller can queue a delta and
    its op_id result back to back (same transaction, no await between) and then await durability once.
    """

    def __init__(
        self,
        data_dir: Path | None,
        *,
        op_retention: int = 10_000,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        self._file = None if data_dir is None else _SQLiteFile(data_dir, op_retention)
        self._executor: ThreadPoolExecutor | None = None
        self._on_commit = on_commit
        self._pending = _Batch()
        self._pending_future: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failed: BaseException | None = None
        self.last_seq = 0

    @property
    def durable(self) -> bool:
        return self._file is not None

    @property
    def healthy(self) -> bool:
        """False once a commit failed: the node still serves reads but must not claim to be ready."""
        return self._failed is None and not self._closed

    async def open(self) -> Recovered:
        if self._file is None:
            return Recovered()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rumor-storage")
        try:
            recovered = await self._in_thread(self._file.open)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open storage: {exc}") from exc
        self.last_seq = recovered.deltas[-1][0] if recovered.deltas else 0
        return recovered

    def append_delta(self, key: str, type_name: str, delta: bytes) -> asyncio.Future[None]:
        """Queues a delta for `key`; returns the future of its batch. Its seq is `last_seq` right after the call."""
        self.last_seq += 1
        if self._file is not None:
            self._pending.deltas.append((self.last_seq, key, type_name, delta))
        return self._queued()

    def put_op_result(self, key: str, op_id: str, result: bytes) -> asyncio.Future[None]:
        if self._file is not None:
            self._pending.op_results.append((key, op_id, result))
        return self._queued()

    def checkpoint(self, key: str, type_name: str, state: bytes, upto_seq: int) -> asyncio.Future[None]:
        """Stores `state` as `key`'s full state and drops its log rows with seq <= `upto_seq` (all contained in it)."""
        if self._file is not None:
            self._pending.checkpoints[key] = (type_name, state, upto_seq)
        return self._queued()

    def put_meta(self, name: str, value: str) -> asyncio.Future[None]:
        if self._file is not None:
            self._pending.meta[name] = value
        return self._queued()

    async def flush(self) -> None:
        """Returns once everything queued so far is on disk (or raises the commit's StorageError)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
        if self._failed is not None:
            raise StorageError(f"storage failed: {self._failed}") from self._failed

    async def close(self) -> None:
        with contextlib.suppress(StorageError):
            await self.flush()
        self._closed = True
        if self._file is not None and self._executor is not None:
            await self._in_thread(self._file.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _queued(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StorageError("storage is closed")
        if self._file is None:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        if self._pending_future is None:
            self._pending_future = loop.create_future()
            # Writes nobody awaits (checkpoints) must not log "exception never retrieved".
            self._pending_future.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._commit_loop())
        return self._pending_future

    async def _commit_loop(self) -> None:
        assert self._file is not None
        while len(self._pending):
            batch, future = self._pending, self._pending_future
            self._pending, self._pending_future = _Batch(), None
            started = time.perf_counter()
            try:
                await self._in_thread(self._file.write, batch)
            except (sqlite3.Error, OSError) as exc:
                self._failed = exc
                if future is not None and not future.done():
                    future.set_exception(StorageError(f"commit failed: {exc}"))
                continue
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started, len(batch))
            if future is not None and not future.done():
                future.set_result(None)

    async def _in_thread(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
