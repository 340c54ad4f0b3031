"""Backup and restore of a whole cluster, in process on real loopback sockets: a backup taken from one node restores
a cluster that was lost entirely (imported into one fresh node, it reaches the others by replication), and the same
backup imported into a cluster that moved on since loses none of the newer writes anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_runtime_loopback import cluster, wait_for

from rumor.crdt import decode
from rumor.server.backup import export_chunks, import_export
from rumor.server.backup_format import ExportReader
from rumor.server.node import Node
from rumor.server.updates import Increment, MapChange, RegisterWrite, SetChange

pytestmark = pytest.mark.integration

CONVERGE_S = 20.0


async def backup_of(node: Node) -> bytes:
    return b"".join([chunk async for chunk in export_chunks(node)])


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i:i + 4096]


def states_in(data: bytes) -> dict[str, tuple[str, Any]]:
    reader = ExportReader()
    states = {r.key: (r.type_name, decode(r.state)) for r in reader.feed(data)}
    reader.finish()
    return states


def holds(node: Node, key: str, type_name: str, state: Any) -> bool:
    entry = node.keyspace.entry(key)
    return entry is not None and (entry.type_name, entry.state) == (type_name, state)


def value(node: Node, key: str) -> Any:
    item = node.keyspace.item(key)
    return None if item is None else item.value


async def write_through_every_node(nodes: list[Node]) -> None:
    a, b, c = nodes
    await a.update("visits", Increment(amount=5))
    await b.update("tags", SetChange(add=("red", "green")))
    await c.update("owner", RegisterWrite(value="ada"))
    await a.update("profile", MapChange(set=(("name", "ada"), ("age", 36))))
    await b.update("doomed", Increment(amount=1))
    await c.update("visits", Increment(amount=2))


async def test_restore_a_lost_cluster_from_a_backup() -> None:
    async with cluster(3) as nodes:
        await write_through_every_node(nodes)
        await wait_for(lambda: all(value(n, "visits") == 7 and value(n, "doomed") == 1 for n in nodes), CONVERGE_S)
        await wait_for(lambda: all(value(n, k) is not None for n in nodes for k in ("tags", "owner", "profile")),
                       CONVERGE_S)
        backup = await backup_of(nodes[1])
        await nodes[0].update("visits", Increment(amount=100))  # after the backup: lost with the cluster
    expected = states_in(backup)
    assert set(expected) == {"visits", "tags", "owner", "profile", "doomed"}

    async with cluster(3) as fresh:  # every node lost: a new cluster, empty
        assert all(len(n.keyspace) == 0 for n in fresh)
        result = await import_export(fresh[2], chunks(backup))
        assert (result.records, result.merged) == (5, 5)
        await wait_for(lambda: all(holds(n, k, t, s) for n in fresh for k, (t, s) in expected.items()), CONVERGE_S)
        assert [value(n, "visits") for n in fresh] == [7, 7, 7]
        assert [value(n, "tags") for n in fresh] == [["green", "red"]] * 3


async def test_an_old_backup_imported_into_a_cluster_that_moved_on_loses_nothing_newer() -> None:
    async with cluster(3) as nodes:
        a, b, c = nodes
        await write_through_every_node(nodes)
        await wait_for(lambda: all(value(n, "visits") == 7 and value(n, "doomed") == 1 for n in nodes), CONVERGE_S)
        await wait_for(lambda: all(value(n, k) is not None for n in nodes for k in ("tags", "owner", "profile")),
                       CONVERGE_S)
        backup = await backup_of(a)
        # the cluster moves on: more increments, an overwrite, a remove, a field write and a delete
        await b.update("visits", Increment(amount=3))
        await c.update("owner", RegisterWrite(value="grace"))
        await a.update("tags", SetChange(remove=("red",), add=("blue",)))
        await b.update("profile", MapChange(set=(("age", 37),)))
        await c.delete("doomed")

        def moved_on(node: Node) -> bool:
            return (value(node, "visits"), value(node, "owner"), value(node, "tags"), value(node, "profile"),
                    value(node, "doomed")) == (10, "grace", ["blue", "green"], {"name": "ada", "age": 37}, None)

        await wait_for(lambda: all(moved_on(n) for n in nodes), CONVERGE_S)
        logged = b.storage.last_seq
        result = await import_export(b, chunks(backup))
        # b holds all the backup holds and more: every record is joined as nothing new, and nothing is logged or spread
        assert (result.records, result.unchanged, result.conflicts) == (5, 5, 0)
        assert b.storage.last_seq == logged
        assert all(moved_on(n) for n in nodes)
