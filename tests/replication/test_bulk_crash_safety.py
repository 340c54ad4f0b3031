"""A crash at any point of a bulk catch-up loses nothing: each reply's states are one storage transaction, a restart
finds exactly the batches that committed (each state whole and readable), its digests are rebuilt from what is on
disk, and the next session brings the rest.

The catching-up node is a real durable `Node` (SQLite in a temp dir) behind the production `HostStore`; its peer an
in-process replica. A crash is injected two ways: the process stopping between two batches (storage closed with
nothing more written), and a commit failing inside the transaction of one batch (SQLite rolls it back).
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from replication_helpers import Replica

from rumor.server.config import ServerConfig
from rumor.server.errors import StorageError
from rumor.server.node import Node
from rumor.server.replication import ReplicaCore, ReplicationConfig
from rumor.server.replication.runtime import HostStore
from rumor.server.replication.sync import SyncInitiator, check_states
from rumor.server.updates import Increment, RegisterWrite, SetChange

KEYS = 3000
CONFIG = ReplicationConfig(sync_interval_s=1e9)


def _source() -> Replica:
    source = Replica("source", CONFIG, 1)
    for i in range(KEYS):
        update = [Increment(amount=i + 1), SetChange(add=(f"e{i}",)), RegisterWrite(value=f"v{i}")][i % 3]
        source.keyspace.apply_local(f"k{i:05d}", update)
    source.core.digests.flush(10**9)
    return source


def _encoded(keyspace: Any) -> dict[str, tuple[str, bytes]]:
    return {key: (keyspace.entry(key).type_name, keyspace.entry(key).encoded()) for key in keyspace}


async def _open(data_dir: Path) -> tuple[Node, ReplicaCore]:
    node = Node(ServerConfig(data_dir=data_dir, node_id="fresh"))
    await node.start()
    core = ReplicaCore("fresh", HostStore(node), CONFIG, random.Random(3), 0.0, epoch=1)
    core.digests.flush(10**9)  # a restarted node's digests: rebuilt from the keyspace it recovered
    return node, core


async def _offload(rows: list[tuple[bytes, bytes]]) -> tuple[bytes, str] | None:
    return check_states(rows)  # the runtime runs it in a worker process


async def _committed(node: Node) -> None:
    """Every batch queued so far has committed, or failed (the injected failure: the walk goes on regardless)."""
    with contextlib.suppress(StorageError):
        await node.storage.flush()


async def _walk(core: ReplicaCore, source: Replica, node: Node, rounds: int | None = None) -> SyncInitiator:
    """Drive a session as the runtime does (settle each reply's states while the next request is out), each batch
    committed before the next round; stop after `rounds` replies (None: to the end)."""
    session, message = core.start_sync("source", 1.0, peer_reads_bulk=True)
    session.max_waiting = 1  # as the runtime: a reply's states wait for `settle`, checked by the offload
    done = 0
    while message is not None and (rounds is None or done < rounds):
        reply = source.core.handle_request(message, "fresh", 1.0)
        await session.settle(_offload, 1.0)
        message = session.receive(reply, 1.0)
        await _committed(node)
        done += 1
    await session.settle(_offload, 1.0)
    await _committed(node)
    core.sync_finished(session, 1.0)
    return session


def _stored(data_dir: Path) -> dict[str, tuple[str, bytes]]:
    with sqlite3.connect(data_dir / "rumor.sqlite3") as conn:
        rows = conn.execute("SELECT key, type, state FROM states")
        return {key: (type_name, state) for key, type_name, state in rows}


async def _recovers_and_completes(data_dir: Path, source: Replica, committed: dict[str, tuple[str, bytes]]) -> None:
    """After the crash: what is on disk is whole batches of the source's exact states, a restart serves exactly
    that (every state readable), and a new session completes the catch-up, durably."""
    want = _encoded(source.keyspace)
    assert committed and all(want[key] == row for key, row in committed.items())
    node, core = await _open(data_dir)
    try:
        assert _encoded(node.keyspace) == committed
        assert all(node.keyspace.item(key) == source.keyspace.item(key) for key in committed)
        assert len(core.digests.tree) == len(committed)
        session = await _walk(core, source, node)
        assert session.outcome is not None and session.outcome.complete, session.outcome
        assert session.outcome.states_installed == KEYS - len(committed)
        assert core.digests.tree.root() == source.core.digests.tree.root()
    finally:
        await node.stop()
    node, _core = await _open(data_dir)
    try:
        assert _encoded(node.keyspace) == want
    finally:
        await node.stop()


async def test_a_crash_between_two_batches_keeps_the_committed_ones_and_a_rerun_repairs_the_rest(
        tmp_path: Path) -> None:
    source = _source()
    node, core = await _open(tmp_path)
    session = await _walk(core, source, node, rounds=3)
    assert session.walking and core.stats.states_installed > 0
    await node.storage.close()  # the process dies: nothing more reaches the disk (no final checkpoint)
    committed = _stored(tmp_path)
    assert 0 < len(committed) < KEYS
    assert len(committed) == core.stats.states_installed
    await node.stop()
    await _recovers_and_completes(tmp_path, source, committed)


class _FailingCommit:
    """A connection whose COMMIT fails once, for the first transaction that stores full states after ``after``
    such transactions: SQLite then rolls back the whole transaction, as a crash inside it would leave it."""

    def __init__(self, conn: sqlite3.Connection, after: int) -> None:
        self._conn = conn
        self._left = after
        self._in_states = False
        self.failed = False

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT OR REPLACE INTO states"):
            self._in_states = True
        if sql == "COMMIT" and self._in_states and not self.failed:
            self._in_states = False
            if self._left == 0:
                self.failed = True
                raise sqlite3.OperationalError("disk I/O error (injected inside the transaction)")
            self._left -= 1
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("after", [0, 2])
async def test_a_commit_failing_inside_a_batch_stores_none_of_it_and_a_rerun_repairs_everything(
        tmp_path: Path, after: int) -> None:
    source = _source()
    node, core = await _open(tmp_path)
    sqlite_file = node.storage._file
    assert sqlite_file is not None
    failing = _FailingCommit(sqlite_file._conn, after)  # type: ignore[arg-type]
    sqlite_file._conn = failing  # type: ignore[assignment]
    await _walk(core, source, node, rounds=after + 2)
    assert failing.failed and not node.storage.healthy  # the node says so: /health fails
    sqlite_file._conn = failing._conn
    committed = _stored(tmp_path)
    installed = core.stats.states_installed
    assert len(committed) < installed  # the failed batch's states are in memory only, none of them on disk
    await node.stop()  # storage failed: no final checkpoint, the disk keeps what committed
    if after == 0:
        assert _stored(tmp_path) == {}
        node, core = await _open(tmp_path)
        try:
            session = await _walk(core, source, node)
            assert session.outcome is not None and session.outcome.complete
        finally:
            await node.stop()
        assert _stored(tmp_path) == _encoded(source.keyspace)
        return
    await _recovers_and_completes(tmp_path, source, committed)
