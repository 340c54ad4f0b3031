"""Per-key digests stored beside the states, and the anti-entropy hash tree built from them (`merkle.StoredTree`):
the tree a restart reads from the stored leaf hashes equals the tree of a full rebuild, its overlay empties once
checkpoints commit, rows without digests get them in the background, and anti-entropy between a restarted node
whose keys are all cold and a peer repairs every difference."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from rumor.crdt import ORSet, PNCounter, encode
from rumor.gossip.anti_entropy import BulkWalk, MerkleTree, answer_bulk, state_digest
from rumor.gossip.anti_entropy.merkle import StoredTree, entry_hash
from rumor.gossip.anti_entropy.wire import decode_message
from rumor.server import state_writes
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.disk_index import TREE_DEPTH, TREE_FANOUT, DigestColumns, StateReader, stored_digest_columns
from rumor.server.node import Node
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.replica import ReplicaCore, sync_pair
from rumor.server.replication.runtime import HostStore
from rumor.server.replication.sync import check_and_hash_states, check_states
from rumor.server.replication.wire import DeltaEntry, state_blob
from rumor.server.storage import DB_FILE, Storage
from rumor.server.updates import Increment, RegisterWrite, SetChange, Update


def _write(i: int, tag: str = "x") -> Update:
    return (Increment(amount=i + 1), SetChange(add=(i, tag)), RegisterWrite(value=f"{tag}{i}"))[i % 3]


def rebuilt(node: Node) -> MerkleTree:
    """The tree of a full rebuild: every key's anti-entropy blob hashed from its state."""
    keyspace = node.keyspace
    items = []
    for key in keyspace:
        held = keyspace.stored(key)
        assert held is not None
        blob = state_blob(*held)
        items.append((key.encode(), state_digest(blob), len(blob)))
    return MerkleTree.from_items(items, TREE_FANOUT, TREE_DEPTH)


def stored_tree(data_dir: Path) -> StoredTree:
    return StoredTree(StateReader(data_dir / DB_FILE), TREE_FANOUT, TREE_DEPTH)


def core_of(node: Node, seed: int) -> ReplicaCore:
    core = ReplicaCore(node.node_id, HostStore(node), ReplicationConfig(), random.Random(seed), 0.0, epoch=seed)
    node.keyspace.subscribe(core.on_local)
    return core


async def checkpoint_all(node: Node) -> None:
    node.checkpoint(len(node.checkpointer.dirty) + 1, everything=True)
    await node.storage.flush()
    await asyncio.sleep(0)  # the commit callbacks


async def test_the_tree_from_stored_digests_equals_a_full_rebuild(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, state_cache_bytes=0)
    async with Node(config) as node:
        await node.update_batch([(f"k{i:04d}", _write(i), None) for i in range(600)])
        await node.delete("k0005")
    assert disk_config.data_dir is not None
    async with Node(config) as node:
        tree = stored_tree(disk_config.data_dir)
        full = rebuilt(node)
        assert tree.node_table() == full.node_table() and len(tree) == len(full) == 600
        leaf = full.leaf_of(b"k0007")
        assert tree.leaf_items(leaf) == full.leaf_items(leaf) and tree.size_of(b"k0007") == full.size_of(b"k0007")
        core = core_of(node, 1)  # attached: writes and checkpoints keep the tree current
        assert core.digests.dirty == 0, "nothing replayed at start: the stored leaf hashes are the tree"
        await node.update_batch([(f"k{i:04d}", _write(i, "y"), None) for i in range(0, 900, 7)])
        core.digests.flush(10_000)
        assert core.digests.tree.node_table() == rebuilt(node).node_table()
        await checkpoint_all(node)
        tree_now = core.digests.tree
        assert isinstance(tree_now, StoredTree) and tree_now.overlaid == 0, "committed: memory holds no key"
        assert tree_now.node_table() == stored_tree(disk_config.data_dir).node_table() == rebuilt(node).node_table()


async def test_a_checkpoint_before_the_rehash_keeps_the_tree_right(disk_config: ServerConfig) -> None:
    """A key's stored digest changes under a tree that has not rehashed it yet: the checkpoint itself tells it."""
    async with Node(disk_config) as node:
        await node.update_batch([(f"k{i}", _write(i), None) for i in range(50)])
        await checkpoint_all(node)
        core = core_of(node, 2)
        await node.update("k1", _write(1, "z"))
        node.checkpoint(10)  # queued, not committed
        await node.update("k1", _write(1, "w"))  # changed again before the commit
        await checkpoint_all(node)
        core.digests.flush(100)
        assert core.digests.tree.node_table() == rebuilt(node).node_table()


async def test_rows_without_digests_get_them_in_the_background(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / DB_FILE)
    conn.executescript("""
        CREATE TABLE states (key TEXT PRIMARY KEY, type TEXT NOT NULL, state BLOB NOT NULL);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    rows = []
    for i in range(40):
        state = ORSet()
        state.merge(state.add("old", f"e{i}"))
        rows.append((f"old{i:02d}", "set", encode(state)))
    conn.executemany("INSERT INTO states VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()
    config = ServerConfig(data_dir=data, node_id="old", checkpoint_interval_s=3600)
    async with Node(config) as node:
        core = core_of(node, 3)
        assert len(core.digests.tree) == 0 and len(node.keyspace) == 40  # not counted until they have a digest
        assert node.checkpointer.backfill_digests(25) == 25 and node.checkpointer.backfill_digests(25) == 15
        assert core.digests.tree.node_table() == rebuilt(node).node_table()
        await node.storage.flush()
        await asyncio.sleep(0)
        assert node.checkpointer.backfill_digests(25) == 0
        assert core.digests.tree.overlaid == 0  # type: ignore[attr-defined]
        assert stored_tree(data).node_table() == rebuilt(node).node_table()


async def test_raw_installs_store_their_digests(disk_config: ServerConfig) -> None:
    donor = ORSet()
    donor.merge(donor.add("peer", "v"))
    async with Node(disk_config) as node:
        core = core_of(node, 4)
        commit = node.install_stored([(f"raw{i}", "set", encode(donor)) for i in range(30)])
        assert commit is not None
        assert core.digests.tree.node_table() == rebuilt(node).node_table()
        await commit
        await asyncio.sleep(0)
        assert core.digests.tree.overlaid == 0  # type: ignore[attr-defined]
    assert disk_config.data_dir is not None
    async with Node(disk_config) as node:
        assert stored_tree(disk_config.data_dir).node_table() == rebuilt(node).node_table()


async def test_anti_entropy_with_a_restarted_node_whose_keys_are_cold(tmp_path: Path) -> None:
    cold_config = ServerConfig(data_dir=tmp_path / "a", node_id="a", checkpoint_interval_s=3600,
                               state_cache_bytes=0)
    peer_config = ServerConfig(data_dir=tmp_path / "b", node_id="b", checkpoint_interval_s=3600)
    async with Node(cold_config) as a:
        await a.update_batch([(f"k{i:04d}", _write(i, "a"), None) for i in range(400)])
    async with Node(cold_config) as a, Node(peer_config) as b:
        await b.update_batch([(f"k{i:04d}", _write(i, "b"), None) for i in range(200, 600)])
        assert a.keyspace.resident == 0
        core_a, core_b = core_of(a, 5), core_of(b, 6)
        for round_ in range(30):
            sync_pair(core_a, core_b, float(round_))
            a.checkpoint_round()  # keeps evicting: the cold node stays cold while it repairs
            core_a.digests.flush(10_000)
            core_b.digests.flush(10_000)
            if core_a.digests.tree.root() == core_b.digests.tree.root():
                break
        assert core_a.digests.tree.root() == core_b.digests.tree.root()
        assert len(a.keyspace) == len(b.keyspace) == 600
        for key in b.keyspace:
            assert a.keyspace.encoded_state(key) == b.keyspace.encoded_state(key)
        assert (await a.read("k0301")).value == [301, "a", "b"]  # type: ignore[union-attr]
        assert core_a.digests.tree.node_table() == rebuilt(a).node_table()
        await checkpoint_all(a)
        assert stored_tree(tmp_path / "a").node_table() == rebuilt(b).node_table()


async def test_the_background_flush_leaves_keys_to_their_checkpoint(disk_config: ServerConfig) -> None:
    """A key a checkpoint will store is encoded and hashed once, by the checkpoint, not again by the background
    flush; a flush before a session still rehashes it at once."""
    config = with_overrides(disk_config, checkpoint_interval_s=3600)
    async with Node(config) as node:
        await node.update_batch([(f"k{i}", _write(i), None) for i in range(30)])
        await checkpoint_all(node)
        core = core_of(node, 5)
        await node.update_batch([(f"k{i}", _write(i, "n"), None) for i in range(10)])
        core.digests.advance(100.0)  # every mark settled
        before = core.digests.rehashed
        assert core.digests.flush(100, settled_s=1.0) == 10 and core.digests.rehashed == before
        assert core.digests.dirty == 10, "left to the checkpoint, still stale until it runs"
        assert "rumor_checkpoint_backlog_keys 10" in node.metrics.render()
        await checkpoint_all(node)
        assert core.digests.dirty == 0 and core.digests.rehashed == before
        assert "rumor_checkpoint_backlog_keys 0" in node.metrics.render()
        assert core.digests.tree.node_table() == rebuilt(node).node_table()
        await node.update_batch([(f"k{i}", _write(i, "m"), None) for i in range(5)])
        core.digests.advance(200.0)
        assert core.digests.flush(100, settled_s=1.0) == 5 and core.digests.dirty == 5
        assert core.digests.flush(100) == 5 and core.digests.dirty == 0 and core.digests.rehashed == before + 5
        assert core.digests.tree.node_table() == rebuilt(node).node_table()


async def test_pushed_deltas_into_cold_keys_read_them_in_one_batch(disk_config: ServerConfig) -> None:
    """A push's deltas for keys held only on disk: their rows are read in one statement, not one each, and every
    delta lands."""
    config = with_overrides(disk_config, state_cache_bytes=0)
    async with Node(config) as node:
        await node.update_batch([(f"k{i:03d}", Increment(amount=1), None) for i in range(40)])
    async with Node(config) as node:
        core = core_of(node, 6)
        point_reads: list[str] = []
        disk = node.keyspace.disk
        assert disk is not None and node.keyspace.resident == 0
        real_get = disk.get
        disk.get = lambda key: point_reads.append(key) or real_get(key)  # type: ignore[method-assign]
        peer = PNCounter()
        delta = peer.increment("peer", 5)
        entries = [DeltaEntry(f"k{i:03d}", "counter", encode(delta)) for i in range(40)]
        core.merge_entries(entries)
        assert point_reads == []
        values = [(await node.read(f"k{i:03d}")).value for i in range(40)]  # type: ignore[union-attr]
        assert values == [6] * 40


async def test_a_bulk_reply_takes_stored_states_with_the_listing(disk_config: ServerConfig) -> None:
    """A responder's bulk reply over disk reads each stored state with its leaf's listing (one read a key): only
    keys changed since stored (in the tree's overlay) are read through the keyspace, and every row carries the
    key's current state."""
    config = with_overrides(disk_config, state_cache_bytes=0)
    async with Node(config) as node:
        await node.update_batch([(f"k{i:04d}", _write(i), None) for i in range(900)])
        await checkpoint_all(node)
    async with Node(config) as node:
        core = core_of(node, 7)
        await node.update_batch([(f"k{i:04d}", _write(i, "new"), None) for i in range(0, 900, 50)])
        core.digests.flush(10_000)  # in the tree, not stored yet
        changed = {f"k{i:04d}".encode() for i in range(0, 900, 50)}
        asked: list[bytes] = []

        def get_states(keys: list[bytes]) -> dict[bytes, bytes]:
            asked.extend(keys)
            return core.get_blobs(keys)

        config_ae = core.ae_config
        walk = BulkWalk(MerkleTree(TREE_FANOUT, TREE_DEPTH), salt=1, width=config_ae.hash_bytes)
        rows: dict[bytes, bytes] = {}
        while not walk.done:
            _, request = decode_message(walk.request(), config_ae.max_message_bytes)
            reply, _, _ = answer_bulk(core.digests.tree, core.get_blob, request, config_ae.hash_bytes,
                                      config_ae.max_message_bytes, get_states)
            rows.update(walk.absorb(decode_message(reply, config_ae.max_message_bytes)[1]).rows)
        assert set(asked) == changed, "the rest came with the listing"
        assert rows == {key.encode(): state_blob(*node.keyspace.stored(key)) for key in node.keyspace}  # type: ignore[misc]


async def test_a_bulk_install_takes_the_digest_columns_made_with_its_check(
        disk_config: ServerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers that check a bulk reply's states also make their digest columns (`check_and_hash_states`): the
    install stores those instead of hashing on the loop, only for the very bytes they were made from, and the
    tree and the stored digests come out as a full rebuild's."""
    rows = []
    for i in range(40):
        state = ORSet()
        state.merge(state.add("peer", f"v{i}"))
        rows.append((f"raw{i:02d}".encode(), state_blob("set", encode(state))))
    refused, columns = check_and_hash_states(rows)
    assert refused is None and len(columns) == len(rows)
    assert check_and_hash_states([*rows[:3], (b"bad", b"set\0garbage")])[0] == check_states([(b"bad", b"set\0garbage")])
    hashed_on_the_loop: list[str] = []

    def counted(key: str, type_name: str, stored: bytes) -> DigestColumns:
        hashed_on_the_loop.append(key)
        return stored_digest_columns(key, type_name, stored)

    monkeypatch.setattr(state_writes, "stored_digest_columns", counted)
    async with Node(disk_config) as node:
        core = core_of(node, 8)
        for (key, blob), made in zip(rows[:-1], columns[:-1], strict=True):
            core.hashed_installs[key] = (blob, made)
        core.hashed_installs[rows[0][0]] = (rows[1][1], columns[1])  # made from other bytes: not taken
        assert core.install_blobs(rows) == []
        assert sorted(hashed_on_the_loop) == ["raw00", "raw39"], "the rest came with their check"
        assert core.digests.tree.node_table() == rebuilt(node).node_table()
        await node.storage.flush()
    assert disk_config.data_dir is not None
    async with Node(disk_config) as node:
        assert stored_tree(disk_config.data_dir).node_table() == rebuilt(node).node_table()


async def test_anti_entropy_merges_into_cold_keys_read_them_in_one_batch(tmp_path: Path) -> None:
    """A session's states for keys held only on disk: the merges' reads of those keys (the state, and the digest
    and size the tree replaces) come in a batch a message, not a point read each (a message of 200 cold keys held a
    step's loop 100 ms and more), and every state lands."""
    cold_config = ServerConfig(data_dir=tmp_path / "a", node_id="a", checkpoint_interval_s=3600, state_cache_bytes=0)
    async with Node(cold_config) as a:
        await a.update_batch([(f"k{i:03d}", _write(i, "a"), None) for i in range(120)])
    async with Node(cold_config) as a, Node(ServerConfig(data_dir=tmp_path / "b", node_id="b")) as b:
        await b.update_batch([(f"k{i:03d}", _write(i, "b"), None) for i in range(120)])
        disk = a.keyspace.disk
        assert disk is not None and a.keyspace.resident == 0
        core_a, core_b = core_of(a, 5), core_of(b, 6)
        core_b.digests.flush(10_000)
        point_reads: list[str] = []
        real_get, real_digest_row = disk.get, disk.digest_row
        disk.get = lambda key: point_reads.append(key) or real_get(key)  # type: ignore[method-assign]
        disk.digest_row = lambda key: point_reads.append(key.decode()) or real_digest_row(key)  # type: ignore[method-assign]
        merged: list[str] = []
        real_merge = core_a.merge_blob
        core_a.merge_blob = lambda key, blob: merged.append(key.decode()) or real_merge(key, blob)  # type: ignore[method-assign]
        session = sync_pair(core_a, core_b, 1.0)
        assert session.outcome is not None and session.outcome.error is None
        assert len(merged) >= 100, "b's states came to a"
        assert [key for key in point_reads if key in merged] == [], "no merge read its key alone"
        for i in range(120):
            assert a.keyspace.encoded_state(f"k{i:03d}") == b.keyspace.encoded_state(f"k{i:03d}")


async def test_a_bulk_walk_reads_each_parts_rows_once_and_stores_right_leaf_hashes(tmp_path: Path) -> None:
    """A walk's part (the keys we lack installed raw, those we hold merged): one read of the part's rows answers
    whether each key is held, its stored digest, and the digest its install replaces (three statements a part
    before); the installs, whose old digests the writer does not look up, leave the stored leaf hashes a full
    rebuild's."""
    joiner_config = ServerConfig(data_dir=tmp_path / "a", node_id="a", checkpoint_interval_s=3600)
    async with Node(joiner_config) as a:
        await a.update_batch([(f"k{i:04d}", _write(i, "a"), None) for i in range(0, 1200, 30)])
    async with Node(joiner_config) as a, Node(ServerConfig(data_dir=tmp_path / "b", node_id="b")) as b:
        await b.update_batch([(f"k{i:04d}", _write(i, "b"), None) for i in range(1200)])
        core_a, core_b = core_of(a, 9), core_of(b, 10)
        core_b.digests.flush(10_000)
        disk = a.keyspace.disk
        assert disk is not None
        statements: list[str] = []
        disk._conn.set_trace_callback(statements.append)
        session = sync_pair(core_a, core_b, 1.0, bulk=True)
        disk._conn.set_trace_callback(None)
        assert session.outcome is not None and session.outcome.complete
        assert session.outcome.states_installed >= 1000, "the keys a lacked came by the walk"
        assert any(s.startswith("SELECT key, digest, size FROM states WHERE key IN") and "digest IS NOT NULL" not in s
                   for s in statements), "the parts' rows were read"
        assert not [s for s in statements if s.startswith("SELECT key FROM states WHERE key IN")], \
            "no part asked again whether its keys are held"
        for i in range(1200):
            assert a.keyspace.encoded_state(f"k{i:04d}") == b.keyspace.encoded_state(f"k{i:04d}")
        assert core_a.digests.tree.node_table() == rebuilt(a).node_table()
        await checkpoint_all(a)
    async with Node(joiner_config) as a:
        assert stored_tree(tmp_path / "a").node_table() == rebuilt(a).node_table()


async def test_a_key_written_again_after_a_fresh_install_gets_its_old_digest_looked_up(tmp_path: Path) -> None:
    """`Storage.checkpoint(fresh=True)` skips the lookup of the key's old digest; a later write of the key in the
    same batch is not fresh any more, so the leaf's stored hash loses the old digest and gains the new one."""
    storage = Storage(tmp_path)
    await storage.open()
    first, second, third = (state_digest(bytes([n])) for n in range(3))
    leaf = 7
    await storage.checkpoint("k", "set", b"s1", digest=first, size=2, leaf=leaf)
    storage.checkpoint("k", "set", b"s2", digest=second, size=2, leaf=leaf, fresh=True)  # not true: k has a row
    await storage.checkpoint("k", "set", b"s3", digest=third, size=2, leaf=leaf)
    await storage.close()
    reader = StateReader(tmp_path / DB_FILE)
    leaves, keys = reader.leaf_hashes(TREE_FANOUT**TREE_DEPTH)
    reader.close()
    assert keys == 1 and leaves[leaf] == entry_hash(b"k", third)


async def test_no_rows_to_checkpoint_queue_nothing_and_the_writer_goes_on(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    await storage.checkpoint_many([])
    await storage.checkpoint("k", "set", b"s", digest=state_digest(b"s"), size=1, leaf=3)
    assert storage.healthy
    await storage.close()
    reader = StateReader(tmp_path / DB_FILE)
    assert reader.existing(["k"]) == {"k"}
    reader.close()
