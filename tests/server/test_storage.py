"""Group-commit storage: batching, recovery order, checkpoints that drop folded log rows, op-result retention."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from rumor.server.disk_index import StateReader
from rumor.server.errors import StorageError
from rumor.server.storage import DB_FILE, ROWS_A_STATEMENT, Storage, insert_rows
from rumor.server.storage import read_log as logged_records


async def test_records_are_on_disk_when_the_future_resolves(tmp_path: Path) -> None:
    commits: list[int] = []
    storage = Storage(tmp_path, on_commit=lambda _s, n: commits.append(n))
    await storage.open()
    await storage.append_delta("k", "counter", b"d1")
    with sqlite3.connect(tmp_path / DB_FILE) as db:  # a second connection sees the committed row
        assert logged_records(db) == [(1, "k", "counter", b"d1")]
    assert commits == [1]
    await storage.close()


class GatedWrites:
    """Holds each commit inside the writer thread until the test lets it go; records what each commit held."""

    def __init__(self, storage: Storage) -> None:
        assert storage._file is not None
        self._write = storage._file.write
        self.entered: list[threading.Event] = [threading.Event() for _ in range(4)]
        self.release: list[threading.Event] = [threading.Event() for _ in range(4)]
        self.batches: list[list[str]] = []
        storage._file.write = self  # type: ignore[method-assign]

    def __call__(self, batch: Any) -> None:
        n = len(self.batches)
        self.batches.append([key for key, _, _ in batch.deltas])
        self.entered[n].set()
        if not self.release[n].wait(10):  # fail the commit (the test then fails) rather than kill the writer
            raise sqlite3.OperationalError("the test never released this commit")
        self._write(batch)


async def test_everything_queued_during_a_commit_goes_into_the_next_one(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    gate = GatedWrites(storage)
    first = storage.append_delta("a", "counter", b"x")
    assert await asyncio.to_thread(gate.entered[0].wait, 10)  # commit 1 is running in the writer
    later = [storage.append_delta(f"k{i}", "counter", b"y") for i in range(100)]
    assert len({id(f) for f in later}) == 1 and later[0] is not first  # all joined the one pending batch
    gate.release[0].set()
    assert await asyncio.to_thread(gate.entered[1].wait, 10)
    gate.release[1].set()
    await asyncio.gather(first, *later)
    assert gate.batches == [["a"], [f"k{i}" for i in range(100)]]
    await storage.close()


async def test_the_writer_starts_the_next_commit_without_waiting_for_the_event_loop(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    gate = GatedWrites(storage)
    first = storage.append_delta("a", "counter", b"x")
    assert await asyncio.to_thread(gate.entered[0].wait, 10)
    second = storage.append_delta("b", "counter", b"y")
    await asyncio.sleep(0)  # the loop iteration that queued "b" ends: its batch is handed to the writer
    # From here the loop thread blocks (no await): only the writer thread can move on to the second commit.
    gate.release[0].set()
    assert gate.entered[1].wait(10)
    assert not first.done()  # telling the waiters needs the loop; the next fsync did not
    gate.release[1].set()
    await asyncio.gather(first, second)
    await storage.close()


async def test_a_batch_is_handed_over_only_when_its_loop_iteration_ends(tmp_path: Path) -> None:
    """Records queued by one loop iteration (every request it handled) share one commit, whatever the writer does."""
    storage = Storage(tmp_path)
    await storage.open()
    gate = GatedWrites(storage)
    futures = [storage.append_delta(f"k{i}", "counter", b"x") for i in range(50)]
    idle = threading.Event()
    threading.Thread(target=lambda: idle.set()).start()
    assert idle.wait(10)  # another thread ran meanwhile (the writer could have, too): the batch was not taken
    assert not gate.entered[0].is_set()
    assert await asyncio.to_thread(gate.entered[0].wait, 10)  # the loop moved on: now it is
    gate.release[0].set()
    await asyncio.gather(*futures)
    assert gate.batches == [[f"k{i}" for i in range(50)]]
    await storage.close()


async def test_recovery_returns_states_then_log_in_order(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    storage.append_delta("a", "set", b"a1")
    storage.append_delta("b", "set", b"b1")
    storage.put_op_result("a", "op", b"result")
    storage.checkpoint("a", "set", b"A-state")
    await storage.append_delta("a", "set", b"a2")
    await storage.close()

    reopened = Storage(tmp_path)
    recovered = await reopened.open()
    assert StateReader(tmp_path / DB_FILE).get("a") == ("set", b"A-state")  # states stay on disk, read on demand
    # the log is dropped only by truncate_log: a1 stays (merging it again into A-state changes nothing)
    assert recovered.deltas == [(1, "a", "set", b"a1"), (2, "b", "set", b"b1"), (3, "a", "set", b"a2")]
    assert recovered.op_results == [("a", "op", b"result")]
    assert reopened.last_seq == recovered.deltas[-1][0]  # new seqs continue after the recovered ones
    await reopened.close()


async def test_op_results_are_bounded(tmp_path: Path) -> None:
    storage = Storage(tmp_path, op_retention=5)
    await storage.open()
    for i in range(12):
        await storage.put_op_result("k", f"op{i}", b"r")
    await storage.close()
    reopened = Storage(tmp_path)
    recovered = await reopened.open()
    assert [op for _, op, _ in recovered.op_results] == [f"op{i}" for i in range(7, 12)]
    await reopened.close()


async def test_in_memory_storage_resolves_at_once_and_writes_nothing(tmp_path: Path) -> None:
    storage = Storage(None)
    recovered = await storage.open()
    assert recovered.deltas == [] and not storage.durable and storage.database is None
    future = storage.append_delta("k", "set", b"x")
    assert future.done()
    await storage.close()
    assert list(tmp_path.iterdir()) == []


async def test_a_failed_commit_is_reported_and_marks_storage_unhealthy(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    await storage.append_delta("k", "set", b"x")
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute("DROP TABLE log")
    with pytest.raises(StorageError):
        await storage.append_delta("k", "set", b"y")
    assert not storage.healthy
    await storage.close()
    with pytest.raises(StorageError):
        storage.append_delta("k", "set", b"z")


async def test_an_unexpected_error_in_a_commit_fails_its_waiters_instead_of_hanging_them(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    assert storage._file is not None
    real_write = storage._file.write

    def broken(batch: Any) -> None:
        raise ValueError("a bug in the writer")

    storage._file.write = broken  # type: ignore[method-assign]
    with pytest.raises(StorageError, match="a bug in the writer"):
        await storage.append_delta("k", "set", b"x")
    assert not storage.healthy
    storage._file.write = real_write  # type: ignore[method-assign]
    await storage.append_delta("k", "set", b"y")  # the writer is still there
    await storage.close()


async def test_a_commit_is_one_log_row_and_truncation_drops_only_rows_wholly_below_the_mark(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    storage.append_delta("a", "set", b"a1")
    await storage.append_delta("b", "set", b"b1")  # commit 1: seqs 1-2
    await storage.append_delta("c", "set", b"c1")  # commit 2: seq 3
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert db.execute("SELECT last_seq FROM log ORDER BY last_seq").fetchall() == [(2,), (3,)]
    await storage.truncate_log(2)  # seq 1 is below the mark, but its row also holds seq 2: the row stays
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert [seq for seq, *_ in logged_records(db)] == [1, 2, 3]
    await storage.truncate_log(3)
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert logged_records(db) == [(3, "c", "set", b"c1")]
    await storage.close()


async def test_after_a_failed_commit_the_log_is_never_truncated(tmp_path: Path) -> None:
    """The failed commit may have held the checkpoints a later truncation counts on: dropping rows could lose data."""
    storage = Storage(tmp_path)
    await storage.open()
    assert storage._file is not None
    await storage.append_delta("a", "set", b"a1")
    real_write = storage._file._write

    def broken(batch: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    storage._file._write = broken  # type: ignore[method-assign]
    with pytest.raises(StorageError):
        await storage.checkpoint("a", "set", b"A-state")
    storage._file._write = real_write  # type: ignore[method-assign]
    await storage.truncate_log(2)
    await storage.close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert logged_records(db) == [(1, "a", "set", b"a1")]
        assert db.execute("SELECT COUNT(*) FROM states").fetchone() == (0,)


async def test_a_row_per_record_log_from_an_older_version_is_migrated_in_order(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute("CREATE TABLE deltas (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL, "
                   "delta BLOB NOT NULL)")
        db.executemany("INSERT INTO deltas VALUES (?, ?, ?, ?)", [(7, "b", "set", b"b1"), (4, "a", "set", b"a1")])
    storage = Storage(tmp_path)
    recovered = await storage.open()
    assert [(key, delta) for _, key, _, delta in recovered.deltas] == [("a", b"a1"), ("b", b"b1")]
    await storage.append_delta("c", "set", b"c1")
    await storage.close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'deltas'").fetchone() is None
    reopened = Storage(tmp_path)
    assert [key for _, key, _, _ in (await reopened.open()).deltas] == ["a", "b", "c"]
    await reopened.close()


def test_multi_row_inserts_write_what_one_row_at_a_time_writes() -> None:
    """`insert_rows` (the writer's statements of `ROWS_A_STATEMENT` rows, so it gives up the GIL once a statement,
    not once a row) leaves the table as `executemany` does: every row, later rows replacing earlier ones."""
    rows = [(f"k{i % 1100}", i) for i in range(2 * ROWS_A_STATEMENT + 201)]
    tables = []
    for write in ("one row at a time", "multi-row"):
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, v INTEGER)")
        if write == "multi-row":
            insert_rows(conn, "INSERT OR REPLACE INTO t (key, v)", rows)
            insert_rows(conn, "INSERT OR REPLACE INTO t (key, v)", [])
        else:
            conn.executemany("INSERT OR REPLACE INTO t (key, v) VALUES (?, ?)", rows)
        tables.append(conn.execute("SELECT key, v FROM t ORDER BY key").fetchall())
    assert tables[0] == tables[1] and len(tables[1]) == 1100 and ("k0", 1100) in tables[1]
