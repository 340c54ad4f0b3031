"""Backup and restore on one node at a time: `GET /v1/export` then `POST /v1/import` round-trips every type, an
import is a join (twice = once; a node that moved on keeps its newer writes), a bad file changes nothing, an
acknowledged import survives a crash, and an export gives the loop back while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
from aiohttp.test_utils import TestClient

from rumor.crdt import MVRegister
from rumor.server.backup import export_chunks, import_export
from rumor.server.backup_format import MEDIA_TYPE, ExportReader
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.updates import Increment, MapChange, MVRegisterWrite, RegisterWrite, SetChange

Build = Callable[..., Any]


async def export_file(client: TestClient) -> bytes:
    response = await client.get("/v1/export")
    assert response.status == 200, await response.text()
    assert response.content_type == MEDIA_TYPE
    return await response.read()


async def import_file(client: TestClient, data: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/import", data=data, headers={"Content-Type": MEDIA_TYPE})
    return response.status, await response.json()


async def write_every_type(node: Node) -> None:
    await node.update("counter", Increment(amount=5))
    await node.update("counter", Increment(amount=-2))
    await node.update("set", SetChange(add=("x", "y", 3)))
    await node.update("set", SetChange(remove=("y",)))
    await node.update("register", RegisterWrite(value={"nested": [1, "two"]}))
    await node.update("mvregister", MVRegisterWrite(value="from n1"))
    other = MVRegister()  # a concurrent write made on another replica: both values are kept
    other.merge(other.write("n9", "from n9"))
    await node.merge_remote("mvregister", "mvregister", other)
    await node.update("map", MapChange(set=(("a", 1), ("b", {"deep": True}))))
    await node.update("emptied", SetChange(add=("gone",)))
    await node.delete("emptied")
    await node.update("ключ/é", Increment(amount=1))  # a key beyond ASCII


def assert_same_keyspace(a: Node, b: Node) -> None:
    assert list(a.keyspace) == list(b.keyspace)
    for key in a.keyspace:
        held, restored = a.keyspace.entry(key), b.keyspace.entry(key)
        assert held is not None and restored is not None
        assert (restored.type_name, restored.state) == (held.type_name, held.state), key
        item, restored_item = a.keyspace.item(key), b.keyspace.item(key)
        assert (None if item is None else item.to_json()) == (None if restored_item is None
                                                              else restored_item.to_json()), key


async def test_round_trip_of_every_type_gives_equal_values_and_contexts(make_api: Build) -> None:
    source, source_api = await make_api(node_id="n1")
    await write_every_type(source)
    data = await export_file(source_api)
    fresh, fresh_api = await make_api(node_id="n2")
    status, result = await import_file(fresh_api, data)
    assert status == 200
    assert result["records"] == result["merged"] == len(source.keyspace) == 7
    assert (result["unchanged"], result["conflicts"], result["conflicted"]) == (0, 0, [])
    assert result["source"]["node"] == "n1"
    assert_same_keyspace(source, fresh)
    assert sorted((await fresh.read("mvregister")).value) == ["from n1", "from n9"]  # type: ignore[union-attr]
    assert await fresh.read("emptied") is None and fresh.keyspace.type_of("emptied") == "set"
    assert await export_file(fresh_api) != data  # another node and time in the header...
    assert [(r.key, r.state) for r in records_of(await export_file(fresh_api))] == \
        [(r.key, r.state) for r in records_of(data)]  # ...the same records


def records_of(data: bytes) -> list[Any]:
    reader = ExportReader()
    records = list(reader.feed(data))
    reader.finish()
    return records


async def test_importing_twice_equals_importing_once(make_api: Build) -> None:
    source, source_api = await make_api(node_id="n1")
    await write_every_type(source)
    data = await export_file(source_api)
    target, target_api = await make_api(node_id="n2")
    await import_file(target_api, data)
    logged = target.storage.last_seq
    status, again = await import_file(target_api, data)
    assert status == 200 and again["unchanged"] == again["records"] == 7 and again["merged"] == 0
    assert target.storage.last_seq == logged  # nothing new: not even a log record
    assert_same_keyspace(source, target)
    status, into_source = await import_file(source_api, data)  # and into the node it came from
    assert status == 200 and into_source["unchanged"] == 7


async def test_import_into_a_node_that_moved_on_keeps_the_newer_writes(make_api: Build) -> None:
    node, api = await make_api(node_id="n1")
    await node.update("hits", Increment(amount=5))
    await node.update("owner", RegisterWrite(value="before the backup"))
    await node.update("tags", SetChange(add=("old", "kept")))
    await node.update("doomed", Increment(amount=1))
    backup = await export_file(api)
    await node.update("hits", Increment(amount=3))
    await node.update("owner", RegisterWrite(value="after the backup"))
    await node.update("tags", SetChange(remove=("old",), add=("new",)))
    await node.delete("doomed")
    status, result = await import_file(api, backup)
    assert status == 200 and result["unchanged"] == 4
    assert (await node.read("hits")).value == 8  # type: ignore[union-attr]
    assert (await node.read("owner")).value == "after the backup"  # type: ignore[union-attr]
    assert (await node.read("tags")).value == ["kept", "new"]  # type: ignore[union-attr]
    assert await node.read("doomed") is None  # a delete made after the backup stays in force

    other, other_api = await make_api(node_id="n2")  # a node with contributions of its own keeps both
    await other.update("hits", Increment(amount=2))
    await asyncio.sleep(0.002)  # the later write's wall clock is later too, though the HLC would order it anyway
    await other.update("owner", RegisterWrite(value="written on n2 later"))
    status, result = await import_file(other_api, backup)
    assert status == 200 and result["merged"] == 4
    assert (await other.read("hits")).value == 7  # type: ignore[union-attr]
    assert (await other.read("owner")).value == "written on n2 later"  # type: ignore[union-attr]
    assert (await other.read("tags")).value == ["kept", "old"]  # type: ignore[union-attr]


async def test_a_key_of_another_type_is_a_conflict_and_the_rest_imports(make_api: Build) -> None:
    source, source_api = await make_api(node_id="n1")
    await source.update("shared", Increment(amount=1))
    await source.update("solo", Increment(amount=2))
    target, target_api = await make_api(node_id="n2")
    await target.update("shared", SetChange(add=("mine",)))
    status, result = await import_file(target_api, await export_file(source_api))
    assert status == 200
    assert (result["conflicts"], result["merged"]) == (1, 1)
    assert result["conflicted"] == [{"key": "shared", "type": "counter", "held": "set"}]
    assert (await target.read("shared")).value == ["mine"]  # type: ignore[union-attr]
    assert (await target.read("solo")).value == 2  # type: ignore[union-attr]


def damaged_files(good: bytes) -> dict[str, bytes]:
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    header = msgpack.packb({"format": "rumor-export", "version": 9, "node": "n1", "created_unix_ms": 1, "wire": 2})
    magic = good[:10]
    return {
        "truncated": good[:-5],
        "cut in a record": good[:len(good) // 2],
        "flipped byte": bytes(flipped),
        "wrong checksum": good[:-32] + bytes(32),
        "wrong version": magic + len(header).to_bytes(4, "big") + header,
        "garbage record": good[:good.index(b"\x93")] + b"\x00\x00\x00\x03\x93\x01\x02",
        "not an export": b'{"updates": []}',
        "empty": b"",
    }


async def test_hostile_files_are_refused_with_nothing_applied(make_api: Build) -> None:
    source, source_api = await make_api(node_id="n1")
    await write_every_type(source)
    good = await export_file(source_api)
    target, target_api = await make_api(node_id="n2")
    await target.update("counter", Increment(amount=1))
    before = (list(target.keyspace), target.storage.last_seq, (await target.read("counter")).value)  # type: ignore
    for name, data in damaged_files(good).items():
        status, answer = await import_file(target_api, data)
        assert status == 400 and answer["error"]["code"] == "bad_export", name
        assert "bad export file at byte" in answer["error"]["message"], name
        after = (list(target.keyspace), target.storage.last_seq, (await target.read("counter")).value)  # type: ignore
        assert after == before, name


async def test_import_checks_media_type_and_options(make_api: Build) -> None:
    _, api = await make_api()
    response = await api.post("/v1/import", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status == 415 and MEDIA_TYPE in (await response.json())["error"]["message"]
    response = await api.post("/v1/import?dry_run=1", data=b"", headers={"Content-Type": MEDIA_TYPE})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_option"
    response = await api.get("/v1/export?prefix=a")
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_option"
    response = await api.head("/v1/export")
    assert response.status == 200 and response.content_type == MEDIA_TYPE


async def test_export_and_import_take_the_api_token(make_api: Build) -> None:
    node, api = await make_api(api_token="secret")
    await node.update("k", Increment(amount=1))
    assert (await api.get("/v1/export")).status == 401
    assert (await api.post("/v1/import", data=b"", headers={"Content-Type": MEDIA_TYPE})).status == 401
    auth = {"Authorization": "Bearer secret"}
    data = await (await api.get("/v1/export", headers=auth)).read()
    response = await api.post("/v1/import", data=data, headers=auth | {"Content-Type": MEDIA_TYPE})
    assert response.status == 200 and (await response.json())["unchanged"] == 1


async def chunks(data: bytes, size: int = 100) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def test_an_acknowledged_import_survives_a_crash(disk_config: ServerConfig) -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as source:
        await write_every_type(source)
        data = b"".join([c async for c in export_chunks(source)])
        async with Node(disk_config) as target:
            result = await import_export(target, chunks(data), spool_dir=disk_config.data_dir)
            assert result.merged == 7
            target._running = False  # a crash: no final checkpoint, storage closed as it is
            await target.storage.close()
        async with Node(disk_config) as restarted:
            assert_same_keyspace(source, restarted)
    assert not [p for p in disk_config.data_dir.iterdir() if p.name.startswith("rumor-import-")]


async def test_imported_states_reach_replication_as_local_changes() -> None:
    """What replication subscribes to (`Keyspace.subscribe`, local updates) hears of every joined record, with the
    bytes that were logged: that is how an import is pushed to peers and marked for anti-entropy."""
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as source, \
            Node(ServerConfig(in_memory=True, node_id="n2")) as target:
        await write_every_type(source)
        data = b"".join([c async for c in export_chunks(source)])
        heard: list[tuple[str, str]] = []
        target.keyspace.subscribe(lambda key, type_name, delta, blob: heard.append((key, type_name)))
        await import_export(target, chunks(data))
        assert heard == [(key, source.keyspace.type_of(key)) for key in source.keyspace]
        heard.clear()
        await import_export(target, chunks(data))
        assert heard == []  # nothing new: nothing to spread


async def test_an_export_gives_the_loop_back_and_shows_writes_made_while_it_runs() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="n1")) as node:
        await node.update_batch([(f"k{i:05}", Increment(amount=1), None) for i in range(5000)])
        turns = 0
        exporting = True

        async def other_work() -> None:  # stands for the requests a node serves meanwhile
            nonlocal turns
            while exporting:
                turns += 1
                await asyncio.sleep(0)

        worker = asyncio.create_task(other_work())
        parts = []
        async for part in export_chunks(node, chunk_bytes=4096):
            if not parts:  # the first chunk went out: a write to a key the export has not reached yet
                await node.update("k04999", Increment(amount=41))
            parts.append(part)
        exporting = False
        await worker
        assert turns > 1  # the loop ran other work between the export's slices
        records = {r.key: r for r in records_of(b"".join(parts))}
        assert len(records) == 5000 and len(parts) > 2
        restored = Node(ServerConfig(in_memory=True, node_id="n2"))
        async with restored:
            await import_export(restored, chunks(b"".join(parts), 65536))
            assert (await restored.read("k04999")).value == 42  # type: ignore[union-attr]
