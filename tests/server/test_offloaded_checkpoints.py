"""Checkpoints of big states encoded off the event loop (`server.checkpointer`): stored as one instant saw
the state, discarded when a write lands meanwhile (the key stays dirty, nothing logged is lost), inline after
repeated discards once the log is pressed, recovered after a restart. The worker is a real thread; tests await
its task, never sleep."""

from __future__ import annotations

from pathlib import Path

from rumor.crdt import encode
from rumor.server.checkpointer import MAX_DISCARDED_ENCODES
from rumor.server.config import ServerConfig
from rumor.server.disk_index import digest_columns
from rumor.server.node import Node
from rumor.server.updates import SetChange

ELEMENTS = 20_000  # about 100 KB encoded: past BIG_STATE_BYTES


async def big_node(node: Node) -> None:
    await node.update("big", SetChange(add=tuple(f"e{i}" for i in range(ELEMENTS))))
    assert node.checkpoint(10) == 1  # the first checkpoint learns the size, inline
    await node.storage.flush()
    await node.update("big", SetChange(add=tuple(f"f{i}" for i in range(ELEMENTS))))  # enough logged to fold again


async def test_a_big_checkpoint_is_encoded_off_the_loop_and_recovered(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path, node_id="n1", checkpoint_interval_s=3600)  # rounds run here only
    async with Node(config) as node:
        await big_node(node)
        assert node.checkpoint(10) == 0 and "big" in node.checkpointer.encoding  # started, not done inline
        await node.checkpointer.encoding["big"]
        assert node.offloader.jobs == 1
        assert "big" not in node.checkpointer.dirty  # folded: the log below it may go
        await node.storage.flush()
        # stored like an inline checkpoint: with the digest of the state it stored beside it
        assert node.disk is not None
        entry = node.keyspace.entry("big")
        assert entry is not None
        expected = digest_columns("big", entry.type_name, encode(entry.state))
        assert node.disk.digest_row(b"big") == (expected.digest, expected.size)
    async with Node(config) as node:
        item = node.keyspace.item("big")
        assert item is not None and len(item.value) == 2 * ELEMENTS


async def test_a_write_during_the_encode_discards_it_and_nothing_is_lost(tmp_path: Path) -> None:
    # rounds run here only; the log is pressed (the big key's records are "too far behind") so that after the
    # discards the fold goes inline
    config = ServerConfig(data_dir=tmp_path, node_id="n1", checkpoint_interval_s=3600, checkpoint_max_log_records=1)
    async with Node(config) as node:
        await big_node(node)
        for attempt in range(MAX_DISCARDED_ENCODES):
            node.checkpointer._retry_at.clear()  # as if the wait after a discarded encode had passed
            node.checkpoint(10)
            task = node.checkpointer.encoding["big"]
            await node.update("big", SetChange(add=(f"during-{attempt}",)))  # lands while the worker encodes
            await task
            assert "big" in node.checkpointer.dirty  # discarded: still dirty, its records still in the log
            if attempt < MAX_DISCARDED_ENCODES - 1:
                assert node.checkpoint(10) == 0 and "big" not in node.checkpointer.encoding  # and not retried at once
        assert node.checkpoint(10) == 1 and "big" not in node.checkpointer.encoding  # then inline, so the key does fold
    async with Node(config) as node:
        item = node.keyspace.item("big")
        assert item is not None and {f"during-{i}" for i in range(MAX_DISCARDED_ENCODES)} <= set(item.value)
        assert len(item.value) == 2 * ELEMENTS + MAX_DISCARDED_ENCODES
