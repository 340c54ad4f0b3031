"""A disk-backed keyspace (`server.keyspace` over `server.disk_index`): the states table is the store of record and
memory a cache. Cold keys (restarted, or evicted) answer every read as hot ones do, listings merge disk and memory
in key order, eviction takes keys out of memory only once their bytes are committed, raw rows install straight to
disk, and an old data directory gains the new columns and still lists correctly."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from rumor.crdt import ORSet, encode
from rumor.server.backup import export_chunks, import_export
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.node import Node
from rumor.server.storage import DB_FILE
from rumor.server.updates import Increment, RegisterWrite, SetChange, Update, new_state

TINY_CACHE = 16 * 1024


def _write(i: int) -> Update:
    return (Increment(amount=i + 1), SetChange(add=(i, "x")), RegisterWrite(value=f"v{i}"))[i % 3]


def _value(i: int) -> object:
    return (i + 1, [i, "x"], f"v{i}")[i % 3]


async def _fill(node: Node, keys: int, *, deleted: tuple[int, ...] = ()) -> None:
    await node.update_batch([(f"k{i:04d}", _write(i), None) for i in range(keys)])
    for i in deleted:
        await node.delete(f"k{i:04d}")


async def _settle(node: Node) -> None:
    """Every queued checkpoint committed, and the commit callbacks run."""
    await node.storage.flush()
    await asyncio.sleep(0)


async def test_cold_keys_answer_every_read_after_a_restart(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=TINY_CACHE)
    async with Node(config) as node:
        await _fill(node, 300, deleted=(3, 4, 200))
        encoded = {key: node.keyspace.encoded_state(key) for key in node.keyspace}
        listed = node.keys(limit=1000)
    async with Node(config) as node:
        keyspace = node.keyspace
        assert keyspace.resident == 0 and len(keyspace) == 300  # nothing read at start; the count is kept
        assert "k0007" in keyspace and "nope" not in keyspace and keyspace.resident == 0
        assert keyspace.type_of("k0007") == "set" and keyspace.has_value("k0007") and not keyspace.has_value("k0003")
        assert {key: keyspace.encoded_state(key) for key in keyspace} == encoded
        some = ["k0001", "k0002", "k0003", "nope", "k0299"]
        assert keyspace.stored_many(some) == {key: held for key in some if (held := keyspace.stored(key))}
        assert keyspace.resident == 0, "reads that change nothing keep nothing in memory"
        assert node.keys(limit=1000) == listed and "k0003" not in dict(listed.keys)
        assert [row[0] for row in keyspace.stored_after("k0290", 100)] == [f"k{i:04d}" for i in range(291, 300)]
        assert keyspace.keys_after("k0002", 2) == ["k0003", "k0004"]  # emptied keys too
        for i in (7, 8, 9, 250):
            assert (await node.read(f"k{i:04d}")).value == _value(i)  # type: ignore[union-attr]
        assert await node.read("k0200") is None
        await node.update("k0011", RegisterWrite(value="after"))
        assert (await node.read("k0011")).value == "after"  # type: ignore[union-attr]
        assert keyspace.stored_many(["k0011", "k0012"]) == {key: keyspace.stored(key) for key in ("k0011", "k0012")}
        assert len(keyspace) == 300


async def test_eviction_under_load_keeps_memory_bounded_and_answers_the_same(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=TINY_CACHE)
    async with Node(config) as node:
        keyspace = node.keyspace
        peak = 0
        for batch in range(20):
            await node.update_batch([(f"k{i:04d}", _write(i), None) for i in range(batch * 50, batch * 50 + 50)])
            for i in range(0, batch * 50, 37):  # reads of older (evicted, cold) keys meanwhile
                assert (await node.read(f"k{i:04d}")).value == _value(i)  # type: ignore[union-attr]
            node.checkpoint(len(node.checkpointer.dirty))
            await _settle(node)
            node.checkpoint_round()
            peak = max(peak, keyspace.resident)
        assert len(keyspace) == 1000 and peak < 200 and keyspace.cache.bytes <= TINY_CACHE
        await node.update("k0001", SetChange(add=("more", "y")))  # a write to an evicted key, not checkpointed
        await node.delete("k0002")
        listing = node.keys(limit=2000).keys
        assert [key for key, _ in listing] == [f"k{i:04d}" for i in range(1000) if i != 2]
        assert (await node.read("k0001")).value == [1, "more", "x", "y"]  # type: ignore[union-attr]
        assert list(keyspace) == [f"k{i:04d}" for i in range(1000)]
    async with Node(config) as node:
        assert (await node.read("k0001")).value == [1, "more", "x", "y"]  # type: ignore[union-attr]
        assert await node.read("k0002") is None and len(node.keyspace) == 1000


async def test_a_key_leaves_memory_only_once_its_checkpoint_committed(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=0)
    async with Node(config) as node:
        await node.update("a", Increment(amount=2))
        node.checkpoint(10)
        entry = node.keyspace.entry("a")
        assert entry is not None and not entry.on_disk
        node.keyspace.cache.shrink(10)
        assert node.keyspace.resident == 1, "queued, not committed: a read from disk now would miss it"
        await _settle(node)
        assert entry.on_disk
        node.keyspace.cache.shrink(10)
        assert node.keyspace.resident == 0
        assert (await node.read("a")).value == 2  # type: ignore[union-attr]


async def test_a_listing_merges_disk_and_memory_and_memory_wins(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=0)
    async with Node(config) as node:
        await _fill(node, 30)
        await node.stop()
    async with Node(config) as node:
        await node.delete("k0005")  # empty in memory, not on disk yet
        await node.update("k0015a", RegisterWrite(value="new"))  # only in memory
        await node.update("j", RegisterWrite(value="before the prefix"))
        first = node.keys(prefix="k001", limit=4)
        assert [key for key, _ in first.keys] == ["k0010", "k0011", "k0012", "k0013"] and first.next == "k0013"
        second = node.keys(prefix="k001", after=first.next, limit=4)
        assert [key for key, _ in second.keys] == ["k0014", "k0015", "k0015a", "k0016"]
        everything = [key for key, _ in node.keys(limit=100).keys]
        assert everything == sorted({"j", "k0015a"} | {f"k{i:04d}" for i in range(30)} - {"k0005"})


async def test_raw_rows_install_straight_to_disk(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=TINY_CACHE)
    donor = ORSet()
    donor.merge(donor.add("elsewhere", "from a peer"))
    blob = encode(donor)
    async with Node(config) as node:
        await node.update("held", Increment(amount=1))
        commit = node.install_stored([("new1", "set", blob), ("held", "counter", b"ignored"), ("new2", "set", blob)])
        assert commit is not None and len(node.keyspace) == 3
        assert (await node.read("new1")).value == ["from a peer"]  # type: ignore[union-attr]
        await commit
        await asyncio.sleep(0)
        assert node.keyspace.entry("new2") is not None and node.keyspace.resident <= 3
        assert node.install_stored([("new1", "set", blob)]) is None  # known now: nothing taken
        assert (await node.read("held")).value == 1  # type: ignore[union-attr]
    async with Node(config) as node:
        assert node.keyspace.encoded_state("new2") == blob and len(node.keyspace) == 3
        assert [key for key, _ in node.keys().keys] == ["held", "new1", "new2"]


async def test_an_old_data_directory_gains_the_new_columns_and_lists_without_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    full, emptied = ORSet(), ORSet()
    full.merge(full.add("r", "x"))
    emptied.merge(emptied.add("r", "y"))
    emptied.merge(emptied.remove("y"))
    conn = sqlite3.connect(data / DB_FILE)
    conn.executescript("""
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE states (key TEXT PRIMARY KEY, type TEXT NOT NULL, state BLOB NOT NULL);
        CREATE TABLE log (last_seq INTEGER PRIMARY KEY, records BLOB NOT NULL);
    """)
    conn.executemany("INSERT INTO states VALUES (?, ?, ?)", [("full", "set", encode(full)),
                                                              ("gone", "set", encode(emptied))])
    conn.commit()
    conn.close()
    config = ServerConfig(data_dir=data, node_id="old", checkpoint_interval_s=3600, state_cache_bytes=0)
    async with Node(config) as node:
        assert [key for key, _ in node.keys().keys] == ["full"] and len(node.keyspace) == 2
        assert not node.keyspace.has_value("gone") and node.keyspace.has_value("full")
        await node.update("gone", SetChange(add=("z", "again")))
    conn = sqlite3.connect(data / DB_FILE)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(states)")]
    flags = dict(conn.execute("SELECT key, empty FROM states").fetchall())
    conn.close()
    assert columns == ["key", "type", "state", "empty", "digest", "size", "leaf"]
    assert flags == {"full": None, "gone": 0}, "filled in by the next checkpoint of the key, left alone otherwise"


async def test_a_data_directory_with_the_index_of_leaves_alone_gets_the_listing_index(tmp_path: Path) -> None:
    """Leaf listings read a covering index (leaf, key, digest, size); a data directory from before it has the index
    of leaf alone, which goes, and its listings then read the index only."""
    config = ServerConfig(data_dir=tmp_path / "data", node_id="n", checkpoint_interval_s=3600)
    async with Node(config) as node:
        await _fill(node, 30)
    conn = sqlite3.connect(tmp_path / "data" / DB_FILE)
    conn.executescript("DROP INDEX states_by_leaf_listing; CREATE INDEX states_by_leaf ON states (leaf);")
    conn.close()
    async with Node(config) as node:
        assert len(node.keyspace) == 30
    conn = sqlite3.connect(tmp_path / "data" / DB_FILE)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    plan = " ".join(str(row) for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT leaf, key, digest, size FROM states WHERE leaf IN (1, 2) AND digest IS NOT NULL"))
    conn.close()
    assert "states_by_leaf" not in indexes and "states_by_leaf_listing" in indexes
    assert "COVERING INDEX states_by_leaf_listing" in plan


async def test_an_export_of_cold_keys_pages_from_disk_and_imports_whole(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=0)
    async with Node(config) as node:
        await _fill(node, 120, deleted=(10,))
    async with Node(config) as node:
        await node.update("k0050", RegisterWrite(value="newer, in memory only"))
        data = b"".join([chunk async for chunk in export_chunks(node)])
        assert node.keyspace.resident == 1, "the export read the cold keys without keeping them"
        async with Node(ServerConfig(in_memory=True, node_id="copy")) as copy:
            result = await import_export(copy, _chunks(data))
            assert result.records == 120
            for key in node.keyspace:
                assert copy.keyspace.item(key) == node.keyspace.item(key)


async def test_installed_rows_survive_a_crash_once_committed(disk_config: ServerConfig) -> None:
    counter = new_state("counter")
    counter.merge(counter.increment("peer", 5))
    async with Node(disk_config) as node:
        commit = node.install_stored([(f"i{n}", "counter", encode(counter)) for n in range(10)])
        assert commit is not None
        await commit
        node._running = False  # a crash: no final checkpoint, storage closed as it is
        await node.storage.close()
    async with Node(disk_config) as node:
        assert len(node.keyspace) == 10 and (await node.read("i9")).value == 5  # type: ignore[union-attr]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


async def test_a_write_load_faster_than_the_rounds_is_checkpointed_between_them(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=64 * 1024, checkpoint_batch_keys=8)
    async with Node(config) as node:
        await _fill(node, 500)
        assert node.checkpointer.backlogged() and len(node.checkpointer.dirty) == 500
        assert await node.checkpointer.drain_backlog() >= 480
        assert not node.checkpointer.backlogged() and len(node.checkpointer.dirty) * 2048 <= 32 * 1024
        await _settle(node)
        node.keyspace.cache.shrink(10_000)
        assert node.keyspace.resident < 100
        assert (await node.read("k0301")).value == _value(301)  # type: ignore[union-attr]
    async with Node(ServerConfig(in_memory=True, node_id="mem")) as memory:
        await _fill(memory, 50)
        assert not memory.checkpointer.backlogged() and await memory.checkpointer.drain_backlog() == 0
