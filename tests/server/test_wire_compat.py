"""A rolling upgrade from the previous release: a node of this release running with `wire_version = 1` writes only
what a previous-release node reads (its CRDT decoder is `crdt.wire_v1`, strict version 1), on disk and to peers, and
keeps counter increments plain (version 1 cannot hold op-keyed entries). The byte-for-byte check against the previous
release's own output is `tests/crdt/test_vectors.py::test_writing_version_1_gives_the_previous_release_s_bytes`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from rumor import crdt
from rumor.crdt import wire_v1
from rumor.server.config import ServerConfig, with_overrides
from rumor.server.errors import ConfigError
from rumor.server.node import Node
from rumor.server.storage import DB_FILE
from rumor.server.updates import Increment, RegisterWrite, SetChange


@pytest.fixture
def writing_version_1() -> Iterator[None]:
    crdt.set_write_version(1)  # what `rumor serve --wire-version 1` does at start (server/serve.py)
    try:
        yield
    finally:
        crdt.set_write_version(crdt.encoding.VERSION)


@pytest.mark.usefixtures("writing_version_1")
async def test_a_node_writing_version_1_stores_and_sends_what_the_previous_release_reads(
        disk_config: ServerConfig) -> None:
    config = with_overrides(disk_config, wire_version=1)
    sent: list[tuple[str, bytes]] = []
    async with Node(config) as node:
        node.keyspace.subscribe(lambda key, type_name, delta, blob: sent.append((key, blob)))
        await node.update("hits", Increment(amount=2), op_id="req-1")
        await node.update("hits", Increment(amount=2), op_id="req-2")
        await node.update("tags", SetChange(add=("a", "b")))
        await node.update("motd", RegisterWrite(value="hi"))
        state = node.keyspace.entry("hits").state  # type: ignore[union-attr]
        assert not state.has_ops() and state.value() == 4  # plain increments: the old release could not read ops
        for key in ("hits", "tags", "motd"):
            old_reader = wire_v1.decode(node.keyspace.encoded_state(key))
            assert old_reader == node.keyspace.entry(key).state  # type: ignore[union-attr]
        tags = node.keyspace.entry("tags").state  # type: ignore[union-attr]
        assert wire_v1.decode_context(crdt.encode_state_context(tags)) == tags.context()  # read contexts too
    assert sent and all(blob is not None and wire_v1.decode(blob) is not None for _, blob in sent)
    with sqlite3.connect(config.data_dir / DB_FILE) as db:
        stored = db.execute("SELECT key, state FROM states").fetchall()
    assert {key for key, _ in stored} == {"hits", "tags", "motd"}
    assert all(wire_v1.decode(blob) is not None for _, blob in stored)


async def test_by_default_a_node_writes_version_2_and_keys_increments_by_op(disk_config: ServerConfig) -> None:
    async with Node(disk_config) as node:
        await node.update("hits", Increment(amount=2), op_id="req-1")
        blob = node.keyspace.encoded_state("hits")
        assert blob[:2] == b"\xc1\x02"
        with pytest.raises(crdt.DecodeError):
            wire_v1.decode(blob)  # what a previous-release node would do with it: refuse
        assert node.keyspace.entry("hits").state.has_ops()  # type: ignore[union-attr]


def test_only_known_wire_versions_are_configured() -> None:
    with pytest.raises(ConfigError):
        ServerConfig(wire_version=3)
