"""The change feed without HTTP (`server.watch`): cursors, origins, coalescing and per-key order, announcement only
after the commit, replay and its limits, resume across restarts, bounded subscribers, and failures made explicit."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from rumor.server.config import ServerConfig, with_overrides
from rumor.server.node import Node
from rumor.server.storage import DB_FILE, Storage
from rumor.server.updates import Increment, RegisterWrite, SetChange
from rumor.server.watch import (
    AHEAD,
    OTHER_EPOCH,
    OTHER_NODE,
    SLOW_CONSUMER,
    TOO_FAR_BEHIND,
    TOO_OLD,
    ChangeFeed,
    Cursor,
    InvalidCursorError,
    Subscriber,
)


def events(node: Node, subscriber: Subscriber) -> list[dict]:
    taken = subscriber.take(1000)
    assert taken.reset is None, taken.reset
    return [e for c in taken.changes if (e := node.feed.event(c)) is not None]


def summary(node: Node, subscriber: Subscriber) -> list[tuple[str, object, str]]:
    return [(e["key"], None if e["deleted"] else e["value"], e["origin"]) for e in events(node, subscriber)]


@pytest.mark.parametrize("node_id", ["n1", "host-0a1b2c", "a b/ü.%~_-", "x" * 128])
def test_a_cursor_reads_back_as_itself_and_is_url_safe(node_id: str) -> None:
    cursor = Cursor(node_id, "0123456789abcdef", 42)
    text = str(cursor)
    assert Cursor.parse(text) == cursor
    assert all(c.isalnum() or c in "._~%-" for c in text)


@pytest.mark.parametrize("text", [
    "", "garbage", "v1.0123456789abcdef.1", "v2.0123456789abcdef.1.n1", "v1.0123456789ABCDEF.1.n1",
    "v1.0123456789abcde.1.n1", "v1.0123456789abcdef.01.n1", "v1.0123456789abcdef.-1.n1",
    "v1.0123456789abcdef.9223372036854775808.n1", "v1.0123456789abcdef.1.", "v1.0123456789abcdef.1.a%2",
    "v1.0123456789abcdef.1.a%2f", "v1.0123456789abcdef.1.a/b", "v1.0123456789abcdef.1.%FF",
    "v1.0123456789abcdef.1.n1\n",
])
def test_text_this_software_never_made_is_not_a_cursor(text: str) -> None:
    with pytest.raises(InvalidCursorError):
        Cursor.parse(text)


async def test_local_writes_and_received_merges_are_announced_with_their_origin() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node, \
            Node(ServerConfig(in_memory=True, node_id="n2")) as peer:
        watcher = node.feed.subscribe("k/")
        await node.update("k/local", RegisterWrite(value="mine"))
        await peer.update("k/remote", SetChange(add=("theirs",)))
        entry = peer.keyspace.entry("k/remote")
        assert entry is not None
        await node.merge_remote("k/remote", entry.type_name, entry.state)
        node.merge_remote_nowait("k/gossiped", "counter", _counter_state(peer))
        assert summary(node, watcher) == [("k/local", "mine", "local"), ("k/remote", ["theirs"], "peer"),
                                          ("k/gossiped", 5, "peer")]


def _counter_state(peer: Node) -> object:
    peer.keyspace.apply_local("c", Increment(amount=5))
    entry = peer.keyspace.entry("c")
    assert entry is not None
    return entry.state


async def test_prefix_filters_and_a_delete_is_an_event_with_no_value() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        users, everything = node.feed.subscribe("user/"), node.feed.subscribe()
        await node.update("user/1", RegisterWrite(value="ada"))
        await node.update("order/1", RegisterWrite(value="tea"))
        await node.update("user", RegisterWrite(value="not under user/"))
        await node.delete("user/1")
        assert summary(node, users) == [("user/1", None, "local")]
        deleted = events(node, everything)
        assert [e["key"] for e in deleted] == ["order/1", "user", "user/1"]
        assert deleted[-1] | {"cursor": None} == {"key": "user/1", "type": "register", "value": None, "context": None,
                                                   "cursor": None, "origin": "local", "deleted": True}


async def test_changes_to_one_key_coalesce_into_its_latest_state_in_order_of_last_change() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        watcher = node.feed.subscribe("c/")
        for key in ("c/a", "c/b", "c/a", "c/c", "c/a"):
            await node.update(key, Increment(amount=1))
        got = events(node, watcher)
        assert [(e["key"], e["value"]) for e in got] == [("c/b", 1), ("c/c", 1), ("c/a", 3)]
        cursors = [Cursor.parse(e["cursor"]).seq for e in got]
        assert cursors == sorted(cursors) == [2, 4, 5]
        # read as it goes: each key's values never go back, and every change shows
        seen: dict[str, list[int]] = {}
        for i in range(30):
            await node.update(f"c/{i % 3}", Increment(amount=1))
            if i % 4 == 0:
                for e in events(node, watcher):
                    seen.setdefault(e["key"], []).append(e["value"])
        for e in events(node, watcher):
            seen.setdefault(e["key"], []).append(e["value"])
        assert {key: values[-1] for key, values in seen.items()} == {"c/0": 10, "c/1": 10, "c/2": 10}
        assert all(values == sorted(set(values)) for values in seen.values())


async def test_a_durable_write_is_announced_only_once_its_commit_settles(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        watcher = node.feed.subscribe()
        write = asyncio.ensure_future(node.update("k", Increment(amount=1)))
        await asyncio.sleep(0)  # the write is applied and queued, not yet on disk
        assert node.keyspace.item("k") is not None and watcher.take(10).changes == []
        await write
        await asyncio.wait_for(watcher.ready.wait(), 5)
        assert summary(node, watcher) == [("k", 1, "local")]


async def test_replay_after_a_cursor_sends_each_changed_key_once_in_order_of_last_change() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        await node.update("r/old", Increment(amount=1))
        cursor = node.feed.cursor(node.feed.head)
        for key in ("r/a", "r/b", "other", "r/a"):
            await node.update(key, Increment(amount=1))
        assert summary(node, node.feed.subscribe("r/", cursor)) == [("r/b", 1, "local"), ("r/a", 2, "local")]
        assert summary(node, node.feed.subscribe("r/", node.feed.cursor(node.feed.head))) == []


async def test_unresumable_cursors_are_resets_with_how_to_resync() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        feed = node.feed
        await node.update("k", Increment(amount=1))
        head = feed.head
        cases = {
            OTHER_NODE: Cursor("n2", feed.epoch, 1),
            OTHER_EPOCH: Cursor("n1", "f" * 16 if feed.epoch != "f" * 16 else "e" * 16, 1),
            AHEAD: Cursor("n1", feed.epoch, head + 5),
        }
        for reason, cursor in cases.items():
            taken = feed.subscribe("user/", cursor).take(10)
            assert taken.reset is not None and taken.reset.reason.startswith(reason) and taken.changes == []
            assert taken.reset.cursor == feed.cursor(head)
            resync = taken.reset.to_json("user/")
            assert resync["cursor"] == str(feed.cursor(head))
            assert "GET /v1/kv?prefix=user%2F" in resync["resync"] and f"since={feed.cursor(head)}" in resync["resync"]


async def test_a_cursor_older_than_the_index_is_a_reset_and_the_index_is_bounded() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        node.feed.max_index_keys = 10
        start = node.feed.cursor(node.feed.head)
        await node.update("k/0", Increment(amount=1))
        after_first = node.feed.cursor(node.feed.head)
        for i in range(1, 15):
            await node.update(f"k/{i}", Increment(amount=1))
        assert len(node.feed) == 10 and node.feed.floor == 5
        taken = node.feed.subscribe("", start).take(100)
        assert taken.reset is not None and taken.reset.reason == TOO_OLD
        replay = node.feed.subscribe("", node.feed.cursor(5)).take(100)
        assert replay.reset is None and [c.key for c in replay.changes] == [f"k/{i}" for i in range(5, 15)]
        assert node.feed.subscribe("", after_first).take(1).reset is not None


async def test_a_replay_too_long_for_one_subscriber_is_a_reset() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        node.feed.max_pending_keys = 3
        start = node.feed.cursor(node.feed.head)
        for i in range(4):
            await node.update(f"k/{i}", Increment(amount=1))
        taken = node.feed.subscribe("k/", start).take(100)
        assert taken.reset is not None and taken.reset.reason.startswith(TOO_FAR_BEHIND) and taken.changes == []
        assert len(node.feed.subscribe("k/3", start).take(100).changes) == 1


async def test_a_subscriber_that_does_not_keep_up_stays_bounded_and_gets_a_reset() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        node.feed.max_pending_keys = 5
        slow = node.feed.subscribe()
        for i in range(100):
            await node.update(f"k/{i % 40}", Increment(amount=1))
            assert len(slow) <= 5
        taken = slow.take(100)
        assert taken.reset is not None and taken.reset.reason == SLOW_CONSUMER
        # the reset's cursor is the change that overflowed; what is still pending all came after it
        assert all(c.seq > taken.reset.cursor.seq for c in taken.changes)
        assert taken.changes[-1].seq == node.feed.head
        assert slow.resets > 1


async def test_a_bug_in_the_feed_is_reported_and_becomes_resets_never_a_failed_write() -> None:
    failures: list[tuple[str, BaseException]] = []
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        node.feed.on_failure = lambda name, exc: failures.append((name, exc))
        watcher = node.feed.subscribe()
        cursor = node.feed.cursor(node.feed.head)

        def broken(key: str, packed: int) -> None:
            raise RuntimeError("index bug")

        node.feed._index_change = broken  # type: ignore[method-assign]
        result = await node.update("k", Increment(amount=1))
        assert result.item is not None and result.item.value == 1
        assert [name for name, _ in failures] == ["watch"]
        taken = watcher.take(10)
        assert taken.reset is not None and taken.reset.reason == "internal error"
        assert node.feed.subscribe("", cursor).take(1).reset is not None  # what it forgot is not replayed


async def test_stopping_the_node_ends_every_subscriber() -> None:
    node = Node(ServerConfig(in_memory=True, node_id="n1"))
    await node.start()
    watcher = node.feed.subscribe()
    feed = node.feed
    await node.stop()
    assert watcher.closed and watcher.ready.is_set() and feed.subscribers == []
    assert feed.subscribe().closed


async def test_cursors_resume_across_a_crash_from_the_log_left_on_disk(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await node.update("a", Increment(amount=1))
        cursor = node.feed.cursor(node.feed.head)
        await node.update("b", RegisterWrite(value="x"))
        await node.update("a", Increment(amount=1))
        node._running = False  # a crash: no final checkpoint, the log stays
        await node.storage.close()
    async with Node(disk_config) as restarted:
        assert restarted.feed.epoch == cursor.epoch
        assert summary(restarted, restarted.feed.subscribe("", cursor)) == [("b", "x", "unknown"), ("a", 2, "unknown")]
        await restarted.update("c", Increment(amount=1))
        assert restarted.feed.head == 4


async def test_a_graceful_restart_keeps_seqs_and_a_caught_up_cursor(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await node.update("a", Increment(amount=1))
        behind = node.feed.cursor(node.feed.head)
        await node.update("b", Increment(amount=1))
        caught_up = node.feed.cursor(node.feed.head)
    with sqlite3.connect(disk_config.data_dir / DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM log").fetchone() == (0,)  # the final checkpoint dropped the log
    async with Node(disk_config) as restarted:
        assert restarted.feed.head == caught_up.seq
        resumed = restarted.feed.subscribe("", caught_up)
        too_old = restarted.feed.subscribe("", behind).take(10)
        assert too_old.reset is not None and too_old.reset.reason == TOO_OLD
        await restarted.update("c", Increment(amount=1))
        assert summary(restarted, resumed) == [("c", 1, "local")]
        assert Cursor.parse(str(restarted.feed.cursor(restarted.feed.head))).seq == caught_up.seq + 1


async def test_an_in_memory_node_draws_a_new_epoch_each_start() -> None:
    config = ServerConfig(in_memory=True, node_id="n1")
    async with Node(config) as first:
        epoch = first.feed.epoch
    async with Node(config) as second:
        assert second.feed.epoch != epoch
        taken = second.feed.subscribe("", Cursor("n1", epoch, 0)).take(1)
        assert taken.reset is not None and taken.reset.reason == OTHER_EPOCH


async def test_a_new_data_directory_has_a_new_epoch(disk_config: ServerConfig, tmp_path: object) -> None:
    async with Node(disk_config) as node:
        epoch = node.feed.epoch
    async with Node(disk_config) as again:
        assert again.feed.epoch == epoch
    other = with_overrides(disk_config, data_dir=disk_config.data_dir.parent / "other")
    async with Node(other) as fresh:
        assert fresh.feed.epoch != epoch


async def test_storage_numbering_continues_after_the_log_was_emptied(tmp_path: object) -> None:
    from pathlib import Path

    data = Path(str(tmp_path)) / "db"
    storage = Storage(data)
    await storage.open()
    for i in range(5):
        storage.append_delta(f"k{i}", "counter", b"x")
    storage.truncate_log(storage.last_seq + 1)
    await storage.flush()
    await storage.close()
    reopened = Storage(data)
    recovered = await reopened.open()
    assert recovered.deltas == [] and reopened.last_seq == 5
    await reopened.close()


def test_a_feed_built_alone_starts_at_its_head() -> None:
    from rumor.server.hlc_source import HLCSource
    from rumor.server.keyspace import Keyspace

    feed = ChangeFeed("n1", "0" * 16, Keyspace("n1", HLCSource(lambda: 0, 0)), head=7)
    assert feed.floor == 7 and str(feed.cursor(7)) == "v1.0000000000000000.7.n1"
