"""Durable storage: an append-only log of deltas plus checkpointed full states in SQLite (WAL), written by group commit.

Why this shape:
- A small update to a huge value (one add to a million-element set) must cost a small write, so the write path
  appends the *delta* to the log; full states are written later by a background checkpointer, a bounded number of
  dirty keys per round.
- The log holds one row per commit (its records packed as one msgpack blob), not one row per record: the commit is
  then a single INSERT, and outside a transaction SQLite commits (and fsyncs) a lone statement by itself, so a commit
  is one call into SQLite. That matters because the sqlite3 module releases the GIL around every call into SQLite
  and the writer must win it back from a busy event loop after each: a row per record means 20 and more hand-overs
  of the GIL a commit, and a third more writer-thread CPU per durable PUT (measured A/B).
- Log rows are dropped once every record in them is folded into a checkpoint: the node keeps its dirty keys in the
  order they became dirty, with the seq of each one's first unfolded record, so the oldest dirty key's seq is the
  low-water mark below which every record is in some checkpointed state. Checkpoints go oldest key first, so the
  mark keeps moving.
- Seqs never go back: dropping log rows also stores the highest seq handed out so far in meta (`log_seq`, in the same
  transaction), and `open` continues after the larger of it and the log's last seq. Without it a log emptied by the
  checkpointer would restart the numbering at 1 on the next start, and a change-feed cursor (`server.watch`), which
  names a change by its seq, would name another change.
- Recovery reads the log and merges its deltas in order into states read from disk as needed (the checkpointed
  states stay in the table, the store of record: `server.disk_index`). Merge is idempotent, so a delta that is both
  in a state and in the log is harmless.
- Beside each state: an ``empty`` flag (listings skip empty keys without decoding) and the key's anti-entropy digest,
  size and hash-tree leaf, with a per-leaf hash table kept equal to them in the same transaction (`write_states`), so
  a restart has the hash tree's node hashes without reading a key (`merkle.StoredTree`).
- Group commit: records queue on the event loop into the pending batch; a dedicated writer thread owns the SQLite
  connection and commits one batch after another, taking whatever queued while the previous commit ran (the loop never
  blocks on fsync). Each caller awaits the future of the batch holding its record: resolved = on disk.
- A batch is handed to the writer once the loop iteration that opened it is over (one `call_soon`), so it holds
  every record that iteration's requests queued: under load that halves the fsyncs (22 records a commit, not 11 in
  the PUT bench), and the fixed cost of a commit (about 0.3 ms of CPU here) is the largest single item of a
  durable write.
- The writer starts the next handed-over batch the moment the last one is on disk, without a round trip through
  the event loop: a busy loop only delays *telling* callers. (A commit task on the loop would make each commit wait
  for the task to be resumed, and under load that cycle, not the CPU, would bound throughput.)
- `synchronous=FULL`: in WAL mode NORMAL skips the fsync of the WAL at commit, so an acknowledged update could vanish
  on power loss (it only survives a process crash). "Acknowledged = durable" needs the fsync; group commit pays it
  once per batch, not once per update.

`Storage(None)` is the in-memory mode: the same interface, nothing written, every future already resolved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from rumor.gossip.anti_entropy.merkle import DIGEST_BYTES, entry_hash
from rumor.gossip.futures import retrieve_exception
from rumor.server.data_dir_lock import DataDirLock
from rumor.server.disk_index import select_in
from rumor.server.errors import StorageError

DB_FILE = "rumor.sqlite3"
#: the meta entry holding the highest seq handed out when log rows were last dropped
LOG_SEQ_META = "log_seq"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- empty: whether the state holds no entry (listings skip it without decoding); digest, size, leaf: the key's
-- anti-entropy digest, the size of what it hashes and its hash-tree leaf (`server.replication.digests`). NULL: not
-- known (rows written before these columns existed, or raw installs): read from the state when needed.
CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY, type TEXT NOT NULL, state BLOB NOT NULL,
                                   empty INTEGER, digest BLOB, size INTEGER, leaf INTEGER);
-- per hash-tree leaf: the XOR of `merkle.entry_hash(key, digest)` over its rows with a digest, and how many there
-- are; written in the same transaction as those rows (`write_states`), so a restart has the tree's node hashes at once
CREATE TABLE IF NOT EXISTS leaf_hashes (leaf INTEGER PRIMARY KEY, hash BLOB NOT NULL, keys INTEGER NOT NULL);
-- one row per commit: last_seq is the seq of its last record; records is msgpack [[key, type, delta], ...]
CREATE TABLE IF NOT EXISTS log (last_seq INTEGER PRIMARY KEY, records BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS op_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, op_id TEXT NOT NULL, result BLOB NOT NULL,
    UNIQUE (key, op_id)
);
"""


#: columns of `states` added after its first release, with their declarations (NULL = not known yet)
_LATER_STATE_COLUMNS = {"empty": "INTEGER", "digest": "BLOB", "size": "INTEGER", "leaf": "INTEGER"}
#: the hash tree's leaf listings (anti-entropy's descent lists hundreds of leaves a step) read this index alone: a
#: listing of 6k rows at 1M keys took 30 ms through an index of leaves and the table, 11 ms from this one. It
#: replaces the index of leaf alone (one-time: 1.3 s to build at 1M keys)
_STATE_INDEXES = """
CREATE INDEX IF NOT EXISTS states_by_leaf_listing ON states (leaf, key, digest, size);
DROP INDEX IF EXISTS states_by_leaf;
"""
#: rows one INSERT statement writes (`insert_rows`): 3,500 parameters for `states`, within SQLite's 32,766
ROWS_A_STATEMENT = 500


class StateRow(NamedTuple):
    """What a checkpoint writes for one key: its state and what is known beside it (None: not known, see _SCHEMA)."""

    type_name: str
    state: bytes
    empty: bool | None = None
    digest: bytes | None = None
    size: int | None = None
    leaf: int | None = None


@dataclass
class Recovered:
    """What was on disk at open, in the order recovery must apply it. Checkpointed states are not read: they stay
    on disk, read on demand (`server.disk_index.StateReader`)."""

    meta: dict[str, str] = field(default_factory=dict)
    #: (seq, key, type name, encoded delta), ascending seq
    deltas: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    #: (key, op_id, encoded result), oldest first
    op_results: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass
class _Batch:
    #: (key, type name, encoded delta), with consecutive seqs ending at `last_seq`
    deltas: list[tuple[str, str, bytes]] = field(default_factory=list)
    last_seq: int = 0
    op_results: list[tuple[str, str, bytes]] = field(default_factory=list)
    checkpoints: dict[str, StateRow] = field(default_factory=dict)
    #: keys of ``checkpoints`` the caller knows have no row yet (a bulk install's): their old digests are not read
    fresh: set[str] = field(default_factory=set)
    #: log rows whose records all have a seq below this are dropped (0: none)
    truncate_below: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.deltas) + len(self.op_results) + len(self.checkpoints) + len(self.meta)

    @property
    def empty(self) -> bool:
        return not self.deltas and self.only_deltas  # nothing at all: no deltas, and nothing but deltas

    @property
    def only_deltas(self) -> bool:
        return not (self.op_results or self.checkpoints or self.truncate_below or self.meta)


class _SQLiteFile:
    """The blocking half: only ever called from the storage thread."""

    def __init__(self, data_dir: Path, op_retention: int) -> None:
        self._data_dir = data_dir
        self.database = data_dir / DB_FILE
        self._op_retention = op_retention
        self._lock = DataDirLock(data_dir)
        self._conn: sqlite3.Connection | None = None
        # False once a commit failed: the checkpoints it held may be missing, so no log row may be dropped any more
        # (the node is unhealthy by then; keeping the log keeps every acknowledged record recoverable).
        self._may_truncate = True

    def open(self) -> Recovered:
        """Locks the data directory (one node per directory: `server.data_dir_lock`), then opens and reads it."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        conn = sqlite3.connect(self.database, isolation_level=None)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        self._migrate_row_per_record_log(conn)
        self._add_state_columns(conn)
        conn.executescript(_STATE_INDEXES)
        return Recovered(
            meta=dict(conn.execute("SELECT name, value FROM meta")),
            deltas=read_log(conn),
            op_results=list(conn.execute("SELECT key, op_id, result FROM op_results ORDER BY id")),
        )

    @staticmethod
    def _migrate_row_per_record_log(conn: sqlite3.Connection) -> None:
        """Data directories written before the log held a row per commit have a `deltas` table (a row per record):
        its rows move into one log row, in their order, and the table goes, in one transaction."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deltas'").fetchone() is None:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            records = [list(row) for row in conn.execute("SELECT key, type, delta FROM deltas ORDER BY seq")]
            if records:
                last_seq = conn.execute("SELECT COALESCE(MAX(last_seq), 0) FROM log").fetchone()[0] + len(records)
                conn.execute("INSERT INTO log (last_seq, records) VALUES (?, ?)", (last_seq, msgpack.packb(records)))
            conn.execute("DROP TABLE deltas")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _add_state_columns(conn: sqlite3.Connection) -> None:
        """Data directories from before a column of `states` existed get it, NULL in every row (adding a column
        with no default rewrites nothing, whatever the table's size): readers treat NULL as not known and read it
        from the state itself, and the next checkpoint of each key fills it in."""
        present = {row[1] for row in conn.execute("PRAGMA table_info(states)")}
        for name, declaration in _LATER_STATE_COLUMNS.items():
            if name not in present:
                conn.execute(f"ALTER TABLE states ADD COLUMN {name} {declaration}")

    def write(self, batch: _Batch) -> None:
        try:
            self._write(batch)
        except BaseException:
            self._may_truncate = False
            raise

    def _write(self, batch: _Batch) -> None:
        conn = self._conn
        assert conn is not None, "write before open"
        log_row = (batch.last_seq, msgpack.packb(batch.deltas)) if batch.deltas else None
        if log_row is not None and batch.only_deltas:
            # A lone statement outside a transaction commits by itself: one call into SQLite for the whole commit.
            conn.execute("INSERT INTO log (last_seq, records) VALUES (?, ?)", log_row)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if log_row is not None:
                conn.execute("INSERT INTO log (last_seq, records) VALUES (?, ?)", log_row)
            if batch.op_results:
                insert_rows(conn, "INSERT OR REPLACE INTO op_results (key, op_id, result)", batch.op_results)
                conn.execute(
                    "DELETE FROM op_results WHERE id <= (SELECT MAX(id) FROM op_results) - ?", (self._op_retention,)
                )
            if batch.checkpoints:
                write_states(conn, batch.checkpoints, batch.fresh)
            if batch.truncate_below and self._may_truncate:
                conn.execute("DELETE FROM log WHERE last_seq < ?", (batch.truncate_below,))
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
        self._lock.release()  # last: no other node may open the database while this connection still has it


class Storage:
    """Asyncio-side group-commit writer over `_SQLiteFile` (or over nothing, in memory).

    Queueing is synchronous and returns the future of the batch the record joined, so a caller can queue a delta and
    its op_id result back to back (same transaction, no await between) and then await durability once.

    Threads: the event loop thread queues records and settles futures; the writer thread only swaps the pending
    batch out (under `_lock`) and talks to SQLite. Futures are created and resolved on the loop thread only.
    """

    def __init__(
        self,
        data_dir: Path | None,
        *,
        op_retention: int = 10_000,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        self._file = None if data_dir is None else _SQLiteFile(data_dir, op_retention)
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending = _Batch()
        self._pending_future: asyncio.Future[None] | None = None
        self._submitted = False  # the pending batch may be taken: the loop iteration that opened it is over
        self._last_future: asyncio.Future[None] | None = None  # of the newest batch: commits settle in order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._failed: BaseException | None = None
        self.last_seq = 0

    @property
    def durable(self) -> bool:
        return self._file is not None

    @property
    def database(self) -> Path | None:
        """The SQLite file (None in memory): what `server.disk_index.StateReader` opens for reading."""
        return None if self._file is None else self._file.database

    @property
    def healthy(self) -> bool:
        """False once a commit failed: the node still serves reads but must not claim to be ready."""
        return self.failure is None

    @property
    def failure(self) -> str | None:
        """Why storage is unhealthy, on one line (what /health shows), or None while it is healthy.

        A writer thread that is gone while storage is open counts too: every queued record would wait for it forever.
        """
        if self._closed:
            return "storage is closed"
        if self._failed is not None:
            return " ".join(f"commit failed: {type(self._failed).__name__}: {self._failed}".split())[:200]
        if self._writer is not None and not self._writer.is_alive():
            return "the storage writer thread stopped"
        return None

    async def open(self) -> Recovered:
        if self._file is None:
            return Recovered()
        self._loop = asyncio.get_running_loop()
        opened: concurrent.futures.Future[Recovered] = concurrent.futures.Future()
        self._writer = threading.Thread(target=self._run_writer, args=(opened,), name="rumor-storage", daemon=True)
        self._writer.start()
        try:
            recovered = await asyncio.wrap_future(opened)
        except StorageError:  # the data directory is locked by another node: its message says what to do
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open storage: {exc}") from exc
        stored_seq = recovered.meta.get(LOG_SEQ_META, "0")
        self.last_seq = max(recovered.deltas[-1][0] if recovered.deltas else 0,
                            int(stored_seq) if stored_seq.isdigit() else 0)
        return recovered

    def append_delta(self, key: str, type_name: str, delta: bytes) -> asyncio.Future[None]:
        """Queues a delta for `key`; returns the future of its batch. Its seq is `last_seq` right after the call."""
        self.last_seq += 1
        if self._file is None:
            return self._resolved()
        with self._lock:
            pending = self._pending
            pending.deltas.append((key, type_name, delta))
            pending.last_seq = self.last_seq
            return self._queued()

    def put_op_result(self, key: str, op_id: str, result: bytes) -> asyncio.Future[None]:
        if self._file is None:
            return self._resolved()
        with self._lock:
            self._pending.op_results.append((key, op_id, result))
            return self._queued()

    def checkpoint(self, key: str, type_name: str, state: bytes, *, empty: bool | None = None,
                   digest: bytes | None = None, size: int | None = None,
                   leaf: int | None = None, fresh: bool = False) -> asyncio.Future[None]:
        """Stores `state` as `key`'s full state (the log keeps its records until `truncate_log` drops them), with what
        is known beside it (`StateRow`; None: not known, found from the state when needed). ``fresh``: the caller
        guarantees the key has no row, committed or queued before this one (a bulk install of keys the node
        lacks), so the write reads no old digest for it."""
        return self.checkpoint_many([(key, StateRow(type_name, state, empty, digest, size, leaf))], fresh=fresh)

    def checkpoint_many(self, rows: Sequence[tuple[str, StateRow]], *, fresh: bool = False) -> asyncio.Future[None]:
        """`checkpoint` of each (key, row), all in the same batch (one commit's future, one hold of the lock). No
        rows: nothing is queued."""
        if self._file is None or not rows:
            return self._resolved()
        with self._lock:
            pending = self._pending
            pending.checkpoints.update(rows)
            if fresh:
                pending.fresh.update(key for key, _ in rows)
            elif pending.fresh:
                pending.fresh.difference_update(key for key, _ in rows)  # written again since: their rows may be there
            return self._queued()

    def truncate_log(self, below_seq: int) -> asyncio.Future[None]:
        """Drops the log's records with a seq below `below_seq`, which the caller guarantees are all folded into
        states checkpointed by now (queued before this call: they commit first, or in the same transaction).

        Rows go whole: one that also holds a record at or above `below_seq` stays until a later call passes it.
        """
        if self._file is None:
            return self._resolved()
        with self._lock:
            self._pending.truncate_below = max(self._pending.truncate_below, below_seq)
            self._pending.meta[LOG_SEQ_META] = str(self.last_seq)  # every seq the dropped rows held is at most this
            return self._queued()

    def put_meta(self, name: str, value: str) -> asyncio.Future[None]:
        if self._file is None:
            return self._resolved()
        with self._lock:
            self._pending.meta[name] = value
            return self._queued()

    async def flush(self) -> None:
        """Returns once everything queued so far is on disk (or raises the commit's StorageError)."""
        last = self._last_future
        if last is not None and not last.done():
            with contextlib.suppress(StorageError):
                await asyncio.shield(last)
        if self._failed is not None:
            raise StorageError(f"storage failed: {self._failed}") from self._failed

    async def close(self) -> None:
        with contextlib.suppress(StorageError):
            await self.flush()
        self._closed = True
        writer = self._writer
        if writer is not None:
            with self._lock:
                self._stopping = True
                self._wake.notify()
            await asyncio.to_thread(writer.join)  # the writer closes the connection on its way out
            self._writer = None

    # -- loop side -------------------------------------------------------------------------------------------------

    def _resolved(self) -> asyncio.Future[None]:
        if self._closed:
            raise StorageError("storage is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _queued(self) -> asyncio.Future[None]:
        """Called with `_lock` held, right after a record joined the pending batch."""
        if self._closed or self._stopping:
            raise StorageError("storage is closed")
        future = self._pending_future
        if future is None:
            assert self._loop is not None
            future = self._pending_future = self._last_future = self._loop.create_future()
            # Writes nobody awaits (checkpoints) must not log "exception never retrieved".
            future.add_done_callback(retrieve_exception)
            self._loop.call_soon(self._submit)
        return future

    def _submit(self) -> None:
        """Runs once the loop iteration that opened the pending batch is over: every request it handled has queued
        its record by then, so the batch is as full as it can get without waiting for anyone."""
        with self._lock:
            self._submitted = True
            self._wake.notify()

    def _settle(self, future: asyncio.Future[None], error: BaseException | None, seconds: float, records: int) -> None:
        if error is not None:
            self._failed = error
            if not future.done():
                future.set_exception(StorageError(f"commit failed: {error}"))
            return
        if self._on_commit is not None:
            self._on_commit(seconds, records)
        if not future.done():
            future.set_result(None)

    # -- writer thread ---------------------------------------------------------------------------------------------

    def _run_writer(self, opened: concurrent.futures.Future[Recovered]) -> None:
        file, loop = self._file, self._loop
        assert file is not None and loop is not None
        try:
            opened.set_result(file.open())
        except BaseException as exc:  # reported to open(); the thread has nothing left to do
            opened.set_exception(exc)
            file.close()
            return
        try:
            while True:
                with self._wake:
                    while not (self._submitted or self._stopping):
                        self._wake.wait()
                    if self._pending.empty and self._stopping:
                        return  # an empty batch submitted while running commits nothing, and the writer goes on
                    batch, future = self._pending, self._pending_future
                    self._pending, self._pending_future, self._submitted = _Batch(), None, False
                assert future is not None
                started = time.perf_counter()
                error: BaseException | None = None
                try:
                    file.write(batch)
                except Exception as exc:  # SQLite or disk errors, or a bug: reported, and the writer carries on
                    error = exc
                try:
                    loop.call_soon_threadsafe(self._settle, future, error, time.perf_counter() - started, len(batch))
                except RuntimeError:  # the loop is gone (interpreter shutdown without close): nobody to tell
                    return
        finally:
            file.close()


def write_states(conn: sqlite3.Connection, rows: dict[str, StateRow], fresh: Set[str] = frozenset()) -> None:
    """Writes full states (inside the caller's transaction) and keeps `leaf_hashes` equal to what the rows' digests
    make: the one way rows with a digest may be written. A row's old digest leaves its leaf's hash, its new one
    joins; a row without a digest (None: not known) counts in no leaf until one is written for it. Keys in
    ``fresh`` have no row (the caller's word): their old digests are not looked up (a random read each, a tenth of
    a catch-up's writer)."""
    keys = [key for key in rows if key not in fresh] if fresh else list(rows)
    old: dict[str, tuple[bytes, int]] = {
        key: (digest, leaf) for key, digest, leaf in select_in(
            conn, "SELECT key, digest, leaf FROM states WHERE key IN ({marks}) AND digest IS NOT NULL", keys)}
    changes: dict[int, list[int]] = {}  # leaf -> [xor, keys added]
    for key, row in rows.items():
        before = old.get(key)
        if before is not None and before == (row.digest, row.leaf):
            continue
        name = key.encode("utf-8")
        if before is not None:
            change = changes.setdefault(before[1], [0, 0])
            change[0] ^= entry_hash(name, before[0])
            change[1] -= 1
        if row.digest is not None and row.leaf is not None:
            change = changes.setdefault(row.leaf, [0, 0])
            change[0] ^= entry_hash(name, row.digest)
            change[1] += 1
    insert_rows(conn, "INSERT OR REPLACE INTO states (key, type, state, empty, digest, size, leaf)",
                [(key, *row) for key, row in rows.items()])
    if not changes:
        return
    leaves = list(changes)
    current: dict[int, tuple[int, int]] = {
        leaf: (int.from_bytes(value, "big"), count) for leaf, value, count in select_in(
            conn, "SELECT leaf, hash, keys FROM leaf_hashes WHERE leaf IN ({marks})", leaves)}
    updated = []
    for leaf, (xor, added) in changes.items():
        value, count = current.get(leaf, (0, 0))
        updated.append((leaf, (value ^ xor).to_bytes(DIGEST_BYTES, "big"), count + added))
    insert_rows(conn, "INSERT OR REPLACE INTO leaf_hashes (leaf, hash, keys)", updated)


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``head`` (an INSERT naming its columns) of every row, `ROWS_A_STATEMENT` rows a statement (a multi-row
    VALUES), as `executemany` would one row at a time. Why: the writer thread gives up the GIL around every
    statement step and waits for it back behind the event loop's thread (up to the interpreter's switch interval
    each time); a batch of 100,000 rows took 59 s by `executemany` beside a busy loop, 8 s this way, 1.4 s alone."""
    if not rows:
        return
    marks = "(" + ",".join("?" * len(rows[0])) + ")"
    for first in range(0, len(rows), ROWS_A_STATEMENT):
        chunk = rows[first : first + ROWS_A_STATEMENT]
        conn.execute(f"{head} VALUES {','.join([marks] * len(chunk))}", [value for row in chunk for value in row])


def read_log(conn: sqlite3.Connection) -> list[tuple[int, str, str, bytes]]:
    """The log's records as (seq, key, type name, encoded delta), ascending seq."""
    records: list[tuple[int, str, str, bytes]] = []
    for last_seq, blob in conn.execute("SELECT last_seq, records FROM log ORDER BY last_seq"):
        unpacked = msgpack.unpackb(blob)
        first_seq = last_seq - len(unpacked) + 1
        records += [(first_seq + i, key, type_name, delta) for i, (key, type_name, delta) in enumerate(unpacked)]
    return records
