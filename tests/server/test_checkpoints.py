"""The checkpointer: which dirty keys it folds into full states, and how far that lets the log be dropped."""

from __future__ import annotations

import sqlite3

from rumor.crdt import decode, encode
from rumor.crdt.encoding import FLAG_ZLIB
from rumor.server.checkpointer import BIG_STATE_BYTES
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.node import Node
from rumor.server.offload import Offloader
from rumor.server.storage import DB_FILE, read_log
from rumor.server.updates import Increment, SetChange

# Over BIG_STATE_BYTES (about 90 KB encoded) in few elements: every write answers with the whole rendered value, so
# each write to a big set costs a sort of all its elements, and these tests write to one many times.
BIG_SET = tuple(f"element-{i:03}-" + "x" * 200 for i in range(400))


def logged_keys(config: ServerConfig) -> list[str]:
    with sqlite3.connect(config.data_dir / DB_FILE) as db:
        return [key for _seq, key, _type, _delta in read_log(db)]


def logged_bytes(config: ServerConfig, key: str) -> int:
    """What the log holds for ``key``: the encoded deltas the node weighs against the key's checkpointed state."""
    with sqlite3.connect(config.data_dir / DB_FILE) as db:
        return sum(len(delta) for _seq, logged_key, _type, delta in read_log(db) if logged_key == key)


def stored_state(config: ServerConfig, key: str) -> bytes | None:
    with sqlite3.connect(config.data_dir / DB_FILE) as db:
        row = db.execute("SELECT state FROM states WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(row[0])


def state_bytes(config: ServerConfig, key: str) -> int:
    """The checkpointed state's plain encoding size (what the node weighs the log against; disk holds it deflated)."""
    blob = stored_state(config, key)
    return 0 if blob is None else len(encode(decode(blob)))


async def test_a_big_state_is_checkpointed_deflated_and_read_back_after_a_restart(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await node.update("big", SetChange(add=BIG_SET))
        await node.update("small", Increment(amount=1))
        assert node.checkpoint(10) == 2
        await node.storage.flush()
        expected = node.keyspace.entry("big").state.value()
    big, small = stored_state(disk_config, "big"), stored_state(disk_config, "small")
    assert big is not None and small is not None
    assert big[2] == FLAG_ZLIB and len(big) * 10 < state_bytes(disk_config, "big")  # 200 x's an element deflate well
    assert small[2] == 0  # a few bytes: stored plain
    async with Node(disk_config) as node:
        assert node.keyspace.entry("big").state.value() == expected


async def test_a_big_state_is_folded_again_only_once_its_deltas_add_up_to_half_of_it(
    disk_config: ServerConfig,
) -> None:
    # the fold policy, with encodes inline (off the loop, the fold lands a task later: test_offloaded_checkpoints)
    async with Node(disk_config, offloader=Offloader(enabled=False)) as node:
        await node.update("big", SetChange(add=BIG_SET))
        assert node.checkpoint(10) == 1
        await node.storage.flush()
        first_size = state_bytes(disk_config, "big")
        assert first_size >= BIG_STATE_BYTES
        await node.update("big", SetChange(add=("one-more",)))
        await node.update("small", Increment(amount=1))
        assert node.checkpoint(10) == 1  # "small" only: one add is not worth re-encoding the big set
        await node.storage.flush()
        assert state_bytes(disk_config, "big") == first_size
        assert logged_keys(disk_config) == ["big", "small"]  # the log keeps all from the waiting key's record on
        folded_at = None
        for i in range(200):  # adds of about 1 KB each, until what was logged for "big" reaches half its state
            await node.storage.flush()
            logged = logged_bytes(disk_config, "big")  # "one-more" and the adds since
            if node.checkpoint(10):
                folded_at = logged
                break
            assert 2 * logged < first_size, "not folded: the deltas logged since add up to less than half the state"
            await node.update("big", SetChange(add=(f"later-{i:03}-" + "y" * 1000,)))
        assert folded_at is not None and 2 * folded_at >= first_size  # folded as soon as they reached half of it
        assert i > 10  # and that took many adds: each one alone weighs little against the state
        await node.storage.flush()
        assert state_bytes(disk_config, "big") > first_size
        assert logged_keys(disk_config) == []  # nothing is dirty any more: the whole log is dropped


async def test_a_waiting_big_key_is_folded_once_its_oldest_record_is_too_far_behind(
    disk_config: ServerConfig,
) -> None:
    config = with_overrides(disk_config, checkpoint_max_log_records=5)
    async with Node(config, offloader=Offloader(enabled=False)) as node:  # inline: the fold counts in this round
        await node.update("big", SetChange(add=BIG_SET))
        node.checkpoint(10)
        await node.update("big", SetChange(add=("one-more",)))  # the big key's oldest unfolded record
        for i in range(4):
            await node.update(f"k{i}", Increment(amount=1))
            assert node.checkpoint(10) == 1  # "k{i}" only: "big" waits
        await node.update("k4", Increment(amount=1))  # now 5 records behind
        assert node.checkpoint(10) == 2
        await node.storage.flush()
        assert logged_keys(config) == []


async def test_restart_after_folding_around_a_waiting_key_recovers_every_update(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await node.update("big", SetChange(add=BIG_SET))
        node.checkpoint(10)
        await node.update("big", SetChange(add=("one-more",)))
        for _ in range(5):
            await node.update("counter", Increment(amount=1))
            node.checkpoint(10)
        await node.update("counter", Increment(amount=10))
        node._running = False  # a crash: no graceful fold of everything
        await node.storage.close()
    async with Node(disk_config) as restarted:
        big = await restarted.read("big")
        counter = await restarted.read("counter")
        assert big is not None and len(big.value) == len(BIG_SET) + 1 and "one-more" in big.value
        assert counter is not None and counter.value == 15
    assert logged_keys(disk_config) == []  # the graceful stop folded everything, the big key too


async def test_a_round_folds_four_times_the_batch_while_the_log_spans_too_many_records(
    disk_config: ServerConfig,
) -> None:
    config = with_overrides(disk_config, checkpoint_batch_keys=2, checkpoint_max_log_records=6)
    async with Node(config) as node:
        for i in range(4):
            await node.update(f"k{i}", Increment(amount=1))
        assert node.checkpoint_round() == 2  # a span of 4 records: the usual batch
        for i in range(4, 12):
            await node.update(f"k{i}", Increment(amount=1))
        assert node.checkpoint_round() == 8  # a span of 10 (k2 .. k11): catching up
        assert node.checkpoint_round() == 2  # k10, k11: back within the bound
        assert node.checkpoint_round() == 0
        await node.storage.flush()
        assert logged_keys(config) == []
