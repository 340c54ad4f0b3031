"""`Node` used from Python (no HTTP) and the `Keyspace` seam: updates, reads, listeners, recovery, op ids."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest

from rumor.crdt import ORSet, PNCounter, decode, encode
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.errors import BadRequestError, KeyNotFoundError, NodeNotRunningError, TypeConflictError
from rumor.server.node import Node
from rumor.server.op_folding import OpFolder
from rumor.server.storage import DB_FILE
from rumor.server.updates import Clear, Increment, MapChange, RegisterWrite, SetChange, parse_context


async def test_embedded_use_without_http() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="a")) as node:
        result = await node.update("visits", Increment(amount=2))
        assert result.item is not None and result.item.value == 2 and result.satisfied and not result.replayed
        await node.update("tags", SetChange(add=("x", "y")))
        await node.update("profile", MapChange(set=(("name", "ada"),)))
        item = await node.read("tags")
        assert item is not None and item.value == ["x", "y"]
        assert await node.read("nothing") is None
        assert node.keys().keys == [("profile", "map"), ("tags", "set"), ("visits", "counter")]
        deleted = await node.delete("tags")
        assert deleted.item is None and await node.read("tags") is None
        with pytest.raises(KeyNotFoundError):
            await node.delete("nothing")
    with pytest.raises(NodeNotRunningError):
        await node.read("visits")


async def test_keyspace_listeners_get_local_deltas_and_optionally_remote_ones() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="a")) as node:
        local: list[tuple[str, str, Any, bytes | None]] = []
        both: list[tuple[str, str, Any, bytes | None]] = []
        node.keyspace.subscribe(lambda *change: local.append(change))
        unsubscribe = node.keyspace.subscribe(lambda *change: both.append(change), remote=True)
        await node.update("c", Increment(amount=3))
        await node.merge_remote("c", "counter", PNCounter().increment("b", 4))
        assert [(k, t) for k, t, _, _ in local] == [("c", "counter")]
        assert [(k, t) for k, t, _, _ in both] == [("c", "counter"), ("c", "counter")]
        assert local[0][3] == encode(local[0][2])  # every local delta is encoded before it changes anything
        # the delta a listener gets, merged into an empty state elsewhere, reproduces the update
        replica = PNCounter()
        replica.merge(local[0][2])
        assert replica.value() == 3
        unsubscribe()
        await node.update("c", Increment(amount=1))
        assert len(both) == 2
        item = await node.read("c")
        assert item is not None and item.value == 8
        assert decode(node.keyspace.encoded_state("c")).value() == 8
        with pytest.raises(TypeConflictError):
            await node.merge_remote("c", "set", ORSet())


async def test_failed_update_leaves_no_trace() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="a")) as node:
        await node.update("c", Increment(amount=1))
        with pytest.raises(TypeConflictError):
            await node.update("c", SetChange(add=("x",)))
        assert node.keyspace.type_of("c") == "counter"
        assert node.keys().keys == [("c", "counter")]


async def test_restart_recovers_from_log_and_from_checkpoints(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        for i in range(20):
            await node.update("c", Increment(amount=1))
            await node.update("s", SetChange(add=(f"e{i}",)))
        assert node.checkpoint(1) == 1  # only one key folded: the other stays as log rows only
        await node.storage.flush()
        await node.update("c", Increment(amount=100))
        await node.update("r", RegisterWrite(value={"x": 1}))
        await node.update("s", SetChange(remove=("e0",)))
        # simulate a crash: close storage without the graceful final checkpoint
        node._running = False
        await node.storage.close()
    async with Node(disk_config) as restarted:
        assert (await restarted.read("c")).value == 120  # type: ignore[union-attr]
        assert (await restarted.read("r")).value == {"x": 1}  # type: ignore[union-attr]
        assert (await restarted.read("s")).value == sorted(f"e{i}" for i in range(1, 20))  # type: ignore[union-attr]
        # a second graceful stop folds everything into states: the log is empty afterwards
    with sqlite3.connect(disk_config.data_dir / DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM log").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM states").fetchone() == (3,)
    async with Node(disk_config) as again:
        assert (await again.read("c")).value == 120  # type: ignore[union-attr]


async def test_node_id_is_derived_once_and_persisted(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path)
    async with Node(config) as first:
        derived = first.node_id
        assert derived
    async with Node(config) as second:
        assert second.node_id == derived
    async with Node(with_overrides(config, node_id="explicit")) as third:
        assert third.node_id == "explicit"


async def test_op_id_results_survive_a_restart_and_are_bounded(disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, op_id_retention=3)
    async with Node(config) as node:
        for i in range(5):
            await node.update("c", Increment(amount=1), op_id=f"op{i}")
        replay = await node.update("c", Increment(amount=1), op_id="op4")
        assert replay.replayed and replay.item is not None and replay.item.value == 5
    async with Node(config) as restarted:
        replay = await restarted.update("c", Increment(amount=1), op_id="op3")
        assert replay.replayed and (await restarted.read("c")).value == 5  # type: ignore[union-attr]
        # aged out of the result cache, so not a replay; the counter still holds op0's own entry (crdt.counter_ops),
        # so the increment is not counted again
        fresh = await restarted.update("c", Increment(amount=1), op_id="op0")
        assert not fresh.replayed and fresh.item is not None and fresh.item.value == 5
        # once folded (here: all of them, at once), the op is gone from the counter: a retry then counts again
        restarted.config = with_overrides(config, op_fold_after_s=0, op_fold_keep=0)
        assert await OpFolder(restarted).fold_round() == 1
        assert not restarted.keyspace.entry("c").state.has_ops()  # type: ignore[union-attr]
        again = await restarted.update("c", Increment(amount=1), op_id="op1")
        assert not again.replayed and again.item is not None and again.item.value == 6
    with sqlite3.connect(config.data_dir / DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM op_results").fetchone()[0] <= 3


async def test_concurrent_retries_of_one_op_id_apply_once() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="a")) as node:
        results = await asyncio.gather(*(node.update("c", Increment(amount=1), op_id="same") for _ in range(5)))
        assert sum(not r.replayed for r in results) == 1
        assert (await node.read("c")).value == 1  # type: ignore[union-attr]


async def test_group_commit_batches_concurrent_updates(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await asyncio.gather(*(node.update(f"k{i}", Increment(amount=1)) for i in range(200)))
        commits = node.metrics.storage_commit_latency.count()
        assert 1 <= commits < 50  # 200 updates, far fewer transactions
        assert node.metrics.storage_commit_records.get() >= 200


async def test_remote_merges_are_durable_and_delete_keeps_concurrent_adds(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await node.update("s", SetChange(add=("mine",)))
        item = await node.read("s")
        assert item is not None
        observed = parse_context(item.context)
        await node.merge_remote("s", "set", ORSet().add("other", "theirs"))
        result = await node.update("s", Clear(**observed))
        assert result.item is not None and result.item.value == ["theirs"]
    async with Node(disk_config) as restarted:
        assert (await restarted.read("s")).value == ["theirs"]  # type: ignore[union-attr]


async def test_a_small_update_to_a_big_set_logs_a_small_delta(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await node.update("big", SetChange(add=tuple(f"element-{i}" for i in range(20_000))))
        node.checkpoint(10)
        await node.update("big", SetChange(add=("one-more",)))
        with sqlite3.connect(disk_config.data_dir / DB_FILE) as db:
            (stored,) = db.execute("SELECT state FROM states WHERE key = 'big'").fetchone()
            rows = db.execute("SELECT records FROM log ORDER BY last_seq").fetchall()
        assert len(encode(decode(stored))) > 100_000  # the plain encoding (the checkpoint holds it deflated)
        (_key, _type, delta), = msgpack.unpackb(rows[-1][0])  # the newest commit: the one add
        assert len(delta) < 200  # the add was logged as a delta, not a rewrite of the state
        assert len(rows) == 1  # the checkpoint dropped the log row of the first add, which its state holds


@pytest.mark.parametrize("make", [
    lambda: RegisterWrite(value={1, 2}),  # a set is not JSON
    lambda: RegisterWrite(value={"when": object()}),
    lambda: SetChange(add=("ok", float("nan"))),
    lambda: MapChange(set=(("field", b"bytes"),)),
    lambda: Increment(amount=0),
    lambda: Increment(amount=True),
])
async def test_an_update_built_in_python_is_checked_before_it_can_reach_a_state(make: Any) -> None:
    """What the encoding, the log and gossip could not carry is refused when the update is built, so it never gets
    into a state (where the next digest rehash or log write would fail on it)."""
    with pytest.raises(BadRequestError):
        make()


async def test_received_bytes_are_logged_as_they_came_without_encoding_again(
    disk_config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rumor.crdt import encode

    delta = PNCounter().increment("n2", 7)
    blob = encode(delta)
    async with Node(disk_config) as node:
        def no_encoding(state: Any) -> bytes:
            raise AssertionError("the received bytes should have been logged")

        monkeypatch.setattr("rumor.server.node.encode", no_encoding)
        await node.merge_remote("c", "counter", delta, blob)
        node.merge_remote_nowait("d", "counter", delta.copy(), blob)
        monkeypatch.undo()
    async with Node(disk_config) as restarted:  # and what was logged is what recovery needs
        assert (await restarted.read("c")).value == 7  # type: ignore[union-attr]
        assert (await restarted.read("d")).value == 7  # type: ignore[union-attr]
