"""Issue 11's first known problem: an acknowledged observed-remove made on a node that has not yet received what
the client's read saw must stick once that data arrives, for set removes, map-field removes, key deletes and register
overwrites, and across a restart (the deferred remove is part of the logged state)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rumor.crdt import decode
from rumor.server.config import ServerConfig
from rumor.server.http_api import create_app
from rumor.server.node import Node

pytestmark = pytest.mark.integration  # the nodes are reached through aiohttp's TestServer: real sockets on loopback


async def _heal(*nodes: Node) -> None:
    """Full-state exchange between every pair, as anti-entropy does after a partition heals."""
    for source in nodes:
        for key in list(source.keyspace):
            type_name = source.keyspace.type_of(key)
            assert type_name is not None
            for target in nodes:
                if target is not source:
                    await target.merge_remote(key, type_name, decode(source.keyspace.encoded_state(key)))


async def _values(node: Node, key: str) -> object:
    item = await node.read(key)
    return None if item is None else item.value


async def _two_nodes(tmp_path: Path | None = None) -> tuple[Node, Node, TestClient, TestClient]:
    def config(name: str) -> ServerConfig:
        if tmp_path is None:
            return ServerConfig(in_memory=True, node_id=name)
        return ServerConfig(node_id=name, data_dir=tmp_path / name, checkpoint_interval_s=3600)

    a, b = Node(config("a")), Node(config("b"))
    await a.start()
    await b.start()
    api_a, api_b = TestClient(TestServer(create_app(a))), TestClient(TestServer(create_app(b)))
    await api_a.start_server()
    await api_b.start_server()
    return a, b, api_a, api_b


async def _close(*parts: Node | TestClient) -> None:
    for part in parts:
        if isinstance(part, TestClient):
            await part.close()
        else:
            await part.stop()


async def test_a_set_remove_with_a_read_from_the_other_side_sticks_after_the_heal() -> None:
    a, b, api_a, api_b = await _two_nodes()
    try:
        await api_a.post("/v1/kv/s", json={"type": "set", "add": ["x", "y"]})
        context = (await (await api_a.get("/v1/kv/s")).json())["context"]
        response = await api_b.post("/v1/kv/s", json={"type": "set", "remove": ["x"], "context": context})
        assert response.status == 204  # acknowledged: b holds nothing of the set yet, the remove waits for it
        await _heal(a, b)
        assert await _values(a, "s") == await _values(b, "s") == ["y"]
    finally:
        await _close(api_a, api_b, a, b)


async def test_a_delete_and_a_map_field_remove_with_a_foreign_read_stick() -> None:
    a, b, api_a, api_b = await _two_nodes()
    try:
        await api_a.post("/v1/kv/gone", json={"type": "counter", "increment": 5})
        await api_a.post("/v1/kv/m", json={"type": "map", "set": {"f": 1, "g": 2}})
        gone_context = (await (await api_a.get("/v1/kv/gone")).json())["context"]
        map_context = (await (await api_a.get("/v1/kv/m")).json())["context"]
        assert (await api_b.delete("/v1/kv/gone", params={"context": gone_context})).status == 204
        response = await api_b.post("/v1/kv/m", json={"type": "map", "remove": ["f"], "context": map_context})
        assert response.status == 204
        assert (await api_b.delete("/v1/kv/never-read")).status == 404  # no context, nothing here: still a 404
        await _heal(a, b)
        for node in (a, b):
            assert await _values(node, "gone") is None
            assert await _values(node, "m") == {"g": 2}
    finally:
        await _close(api_a, api_b, a, b)


async def test_a_register_overwrite_with_a_foreign_read_replaces_what_that_read_saw() -> None:
    a, b, api_a, api_b = await _two_nodes()
    try:
        await api_a.post("/v1/kv/v", json={"type": "mvregister", "value": "seen"})
        context = (await (await api_a.get("/v1/kv/v")).json())["context"]
        await api_b.post("/v1/kv/v", json={"type": "mvregister", "value": "new", "context": context})
        await _heal(a, b)
        assert await _values(a, "v") == await _values(b, "v") == ["new"]  # not ["new", "seen"]: it was observed
    finally:
        await _close(api_a, api_b, a, b)


async def test_a_deferred_remove_survives_a_restart(tmp_path: Path) -> None:
    a, b, api_a, api_b = await _two_nodes(tmp_path)
    try:
        await api_a.post("/v1/kv/s", json={"type": "set", "add": ["x", "y"]})
        context = (await (await api_a.get("/v1/kv/s")).json())["context"]
        await api_b.post("/v1/kv/s", json={"type": "set", "remove": ["x"], "context": context})
        await _close(api_b, b)
        b = Node(ServerConfig(node_id="b", data_dir=tmp_path / "b"))
        await b.start()
        entry = b.keyspace.entry("s")
        assert entry is not None and entry.state.deferred_removes() == 1
        await _heal(a, b)
        assert await _values(a, "s") == await _values(b, "s") == ["y"]
    finally:
        await _close(api_a, a, b)
