"""A restart reads stored states as bytes and builds each one only when something reads it (`server.keyspace.Entry`):
restarting costs reading the database, not decoding every state. Listings, digests and exports work from the bytes;
values, writes and merges decode the key they touch; a stored state that turns out unreadable fails that key, loudly."""

from __future__ import annotations

import sqlite3

import pytest

from rumor.crdt import decode, encode
from rumor.server.config import ServerConfig
from rumor.server.errors import StorageCorruptError
from rumor.server.node import Node
from rumor.server.storage import DB_FILE
from rumor.server.updates import Increment, MapChange, RegisterWrite, SetChange

WRITES = {
    "c": Increment(amount=5),
    "s": SetChange(add=("a", 2)),
    "r": RegisterWrite(value={"x": [1, None]}),
    "m": MapChange(set=(("f", 1),)),
}


async def _filled(config: ServerConfig) -> dict[str, object]:
    async with Node(config) as node:
        for key, update in WRITES.items():
            await node.update(key, update)
        await node.update("big", SetChange(add=tuple(range(2000))))  # a checkpoint deflated on disk
        await node.update("gone", RegisterWrite(value=1))
        await node.delete("gone")
        return {key: (await node.read(key)).value for key in [*WRITES, "big"]}  # type: ignore[union-attr]


async def test_a_restarted_node_lists_hashes_and_exports_without_building_states(disk_config: ServerConfig) -> None:
    values = await _filled(disk_config)
    async with Node(disk_config) as node:
        keyspace = node.keyspace
        assert not any(keyspace.entry(key).decoded for key in keyspace)  # type: ignore[union-attr]
        assert [key for key, _ in node.keys().keys] == sorted([*WRITES, "big"])  # "gone" is empty: not listed
        for key in keyspace:
            blob = keyspace.encoded_state(key)
            assert blob == encode(decode(blob))  # the bytes `encode` writes, hence equal digests everywhere
        assert not any(keyspace.entry(key).decoded for key in keyspace)  # type: ignore[union-attr]
        assert (await node.read("s")).value == values["s"]  # type: ignore[union-attr]
        assert [key for key in keyspace if keyspace.entry(key).decoded] == ["s"]  # type: ignore[union-attr]
        for key, value in values.items():
            assert (await node.read(key)).value == value  # type: ignore[union-attr]
        await node.update("c", Increment(amount=1))
        assert (await node.read("c")).value == 6  # type: ignore[union-attr]


async def test_logged_deltas_still_apply_over_the_stored_bytes(tmp_path: object, disk_config: ServerConfig) -> None:
    await _filled(disk_config)
    async with Node(disk_config) as node:
        await node.update("c", Increment(amount=2))
        await node.update("s", SetChange(remove=("a",)))
        node.storage.checkpoint = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no final fold:
        node.checkpoint = lambda *args, **kwargs: 0  # type: ignore[method-assign]  # the next start replays the log
    async with Node(disk_config) as node:
        assert (await node.read("c")).value == 7  # type: ignore[union-attr]
        assert (await node.read("s")).value == [2]  # type: ignore[union-attr]


async def test_an_unreadable_stored_state_fails_its_key_only(disk_config: ServerConfig) -> None:
    await _filled(disk_config)
    with sqlite3.connect(disk_config.data_dir / DB_FILE) as db:
        db.execute("UPDATE states SET state = ? WHERE key = 's'", (b"\xc1\x02\x00\xde\xad",))
    async with Node(disk_config) as node:
        assert (await node.read("c")).value == 5  # type: ignore[union-attr]
        with pytest.raises(StorageCorruptError, match="'s'"):
            await node.read("s")
        with pytest.raises(StorageCorruptError, match="'s'"):
            node.keys()  # a listing reads each state's layout: it names the key it cannot read
