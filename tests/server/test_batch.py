"""Batches (`POST /v1/batch`, `POST /v1/batch/get`): many updates applied in order with a result each, refused
entries changing nothing while the others go ahead, durable before the answer and applied in slices that leave the
loop free between them, op_id replays, reads of many keys."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient

from rumor.server import node as node_module
from rumor.server.batch import MAX_BATCH
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.storage import DB_FILE, read_log
from rumor.server.updates import Increment
from rumor.server.write_results import WriteResult


async def batch(api: TestClient, updates: Any, status: int = 200, **params: str) -> Any:
    params.setdefault("items", "true")
    response = await api.post("/v1/batch", json={"updates": updates}, params=params)
    assert response.status == status, await response.text()
    return await response.json()


async def value(api: TestClient, key: str) -> Any:
    response = await api.get(f"/v1/kv/{key}")
    return (await response.json())["value"] if response.status == 200 else None


async def test_a_batch_applies_every_update_in_order_with_a_result_each(api: TestClient) -> None:
    answer = await batch(api, [
        {"key": "c", "type": "counter", "increment": 2},
        {"key": "s", "type": "set", "add": ["x", "y"]},
        {"key": "c", "type": "counter", "increment": 3},  # the same key again: sees the first
        {"key": "m", "type": "map", "set": {"f": 1}},
        {"key": "r", "type": "register", "value": "first"},
        {"key": "r", "type": "register", "value": "second"},  # in order: the later write wins
        {"key": "s", "type": "set", "remove": ["x"]},
    ])
    assert answer["errors"] is False
    assert [r["status"] for r in answer["results"]] == [200] * 7
    assert [r["key"] for r in answer["results"]] == ["c", "s", "c", "m", "r", "r", "s"]
    assert [r["item"]["value"] for r in answer["results"][:3]] == [2, ["x", "y"], 5]
    assert (await value(api, "c"), await value(api, "s"), await value(api, "r")) == (5, ["y"], "second")
    assert await value(api, "m") == {"f": 1}


async def test_a_refused_entry_changes_nothing_and_the_others_go_ahead(api: TestClient) -> None:
    await api.post("/v1/kv/taken", json={"type": "counter", "increment": 1})
    answer = await batch(api, [
        {"key": "ok-1", "type": "counter", "increment": 1},
        {"key": "taken", "type": "set", "add": ["x"]},  # a counter already: 409
        {"key": "bad-update", "type": "counter", "increment": 0},  # 400
        {"key": "", "type": "counter", "increment": 1},  # empty key: 400
        {"type": "counter", "increment": 1},  # no key
        {"key": "unknown-field", "type": "counter", "increment": 1, "colour": "red"},
        {"key": "bad-op", "type": "counter", "increment": 1, "op_id": "has space"},
        "not an object",
        {"key": "ok-2", "type": "set", "add": ["z"]},
    ])
    statuses = [(r["key"], r["status"], r.get("error", {}).get("code")) for r in answer["results"]]
    assert statuses == [("ok-1", 200, None), ("taken", 409, "type_mismatch"), ("bad-update", 400, "invalid_operation"),
                        ("", 400, "invalid_key"), ("", 400, "malformed_body"), ("unknown-field", 400, "unknown_field"),
                        ("bad-op", 400, "invalid_option"), ("", 400, "malformed_body"), ("ok-2", 200, None)]
    assert answer["errors"] is True
    assert await value(api, "taken") == 1
    for key in ("bad-update", "unknown-field", "bad-op"):
        assert await value(api, key) is None
    assert (await value(api, "ok-1"), await value(api, "ok-2")) == (1, ["z"])


async def test_an_entrys_own_fields_are_checked_as_a_single_post_body_would_be(api: TestClient) -> None:
    answer = await batch(api, [
        {"key": "colour", "type": "counter", "increment": 1, "colour": "red", "op_id": "o-1"},
        {"key": "both", "type": "set", "add": ["x", 1], "remove": [1]},
        {"key": "neither", "type": "set", "op_id": "o-2"},
        {"key": "fine", "type": "set", "add": ["x"], "remove": ["y"], "op_id": "o-3"},
    ])
    errors = [r.get("error", {}) for r in answer["results"]]
    assert [e.get("code") for e in errors] == ["unknown_field", "invalid_operation", "invalid_operation", None]
    assert "colour" in errors[0]["message"] and "op_id" not in errors[0]["message"]  # key and op_id are the entry's
    assert "both added and removed" in errors[1]["message"] and "needs" in errors[2]["message"]
    assert (await value(api, "both"), await value(api, "fine")) == (None, ["x"])


@pytest.mark.parametrize("body", [
    [], "x", {"updates": []}, {"updates": "x"}, {"updates": [{"key": "k"}], "w": "all"}, {"other": []},
    {"updates": [{"key": f"k{i}", "type": "counter", "increment": 1} for i in range(MAX_BATCH + 1)]},
])
async def test_a_malformed_batch_is_refused_whole(api: TestClient, body: Any) -> None:
    response = await api.post("/v1/batch", json=body)
    assert response.status == 400
    assert (await response.json())["error"]["code"] in ("malformed_body", "unknown_field")
    assert (await (await api.get("/v1/kv")).json())["keys"] == []


async def test_op_ids_in_a_batch_replay_the_first_result_and_refuse_another_request(api: TestClient) -> None:
    updates = [{"key": "c", "type": "counter", "increment": 5, "op_id": "op-a"},
               {"key": "c", "type": "counter", "increment": 5, "op_id": "op-a"}]  # in flight together: applied once
    first = await batch(api, updates)
    assert [r["item"]["value"] for r in first["results"]] == [5, 5]
    assert first["results"][1]["replayed"] is True and "replayed" not in first["results"][0]
    retried = await batch(api, updates[:1])  # the client's retry of the whole batch
    assert retried["results"][0] == first["results"][0] | {"replayed": True}
    reused = await batch(api, [{"key": "other", "type": "counter", "increment": 1, "op_id": "op-a"}])
    assert reused["results"][0]["status"] == 422 and reused["errors"] is True
    assert await value(api, "c") == 5 and await value(api, "other") is None


async def test_a_batch_is_durable_before_its_answer(make_api: Callable[..., Any], disk_config: ServerConfig) -> None:
    _node, api = await make_api(data_dir=disk_config.data_dir, in_memory=False, checkpoint_interval_s=3600)
    answer = await batch(api, [{"key": f"k{i}", "type": "counter", "increment": i + 1} for i in range(200)])
    assert not answer["errors"]
    with sqlite3.connect(disk_config.data_dir / DB_FILE) as db:
        records = read_log(db)
    assert [key for _, key, _, _ in records] == [f"k{i}" for i in range(200)], "every record committed, in order"


async def test_a_big_batch_leaves_the_loop_free_between_its_slices(
        disk_config: ServerConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other work (a probe answer, a timer, another request) runs between a batch's slices, seeing the writes
    applied so far; the batch's answer waits for every one of them to commit."""
    monkeypatch.setattr(node_module, "BATCH_SLICE_S", 0.0)  # every chunk a slice of its own
    async with Node(disk_config) as node:
        seen: list[int] = []
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: seen.append(len(node.keyspace)))
        writes = [(f"k{i:03d}", Increment(amount=1), None) for i in range(3 * node_module.BATCH_CHUNK_WRITES)]
        results = await node.update_batch(writes)
        assert seen == [node_module.BATCH_CHUNK_WRITES], "the callback ran after the first slice, not after all"
        assert len(results) == len(writes) and all(isinstance(r, WriteResult) for r in results)
        assert len(node.keyspace) == len(writes) and node.storage.last_seq >= len(writes)


async def test_w_applies_to_every_update_and_msgpack_works_both_ways(api: TestClient) -> None:
    body = msgpack.packb({"updates": [{"key": "a", "type": "set", "add": [1]},
                                      {"key": "b", "type": "mvregister", "value": {"n": None}}]})
    response = await api.post("/v1/batch", data=body, params={"w": "all", "timeout_ms": "100"},
                              headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"})
    assert response.status == 200 and response.content_type == "application/msgpack"
    answer = msgpack.unpackb(await response.read())
    assert [r["status"] for r in answer["results"]] == [200, 200]  # a one-node cluster: w=all is this node
    assert answer["results"][1]["item"]["value"] == [{"n": None}]


async def test_without_items_a_result_is_its_status_only(api: TestClient) -> None:
    """The default: rendering every updated value is a third of a small update's cost, and a client writing in bulk
    rarely reads what it wrote."""
    response = await api.post("/v1/batch", json={"updates": [
        {"key": "c", "type": "counter", "increment": 1}, {"key": "gone", "type": "set", "remove": ["x"]},
        {"key": "c", "type": "set", "add": ["x"]}, {"key": "c", "type": "counter", "increment": 1, "op_id": "o"}]})
    results = (await response.json())["results"]
    assert [(r["key"], r["status"], "item" in r) for r in results] == [("c", 200, False), ("gone", 204, False),
                                                                        ("c", 409, False), ("c", 200, True)]
    assert results[3]["item"]["value"] == 2  # an op_id's result is rendered anyway: it is stored for replays
    assert (await api.post("/v1/batch", json={"updates": []}, params={"items": "yes"})).status == 400


async def test_a_remove_of_nothing_is_204_in_its_result(api: TestClient) -> None:
    answer = await batch(api, [{"key": "never", "type": "set", "remove": ["x"]}])
    assert answer["results"] == [{"key": "never", "status": 204}] and answer["errors"] is False


async def test_batch_get_reads_many_keys(api: TestClient) -> None:
    await batch(api, [{"key": "a", "type": "counter", "increment": 1}, {"key": "b", "type": "set", "add": ["x"]}])
    response = await api.post("/v1/batch/get", json={"keys": ["a", "missing", "b", ""]}, params={"r": "1"})
    answer = await response.json()
    assert response.status == 200
    assert [(r["key"], r["status"]) for r in answer["results"]] == [("a", 200), ("missing", 404), ("b", 200),
                                                                   ("", 400)]
    assert answer["results"][0]["item"]["value"] == 1 and answer["results"][2]["item"]["type"] == "set"
    assert answer["errors"] is True  # the bad key; a key that is absent is an answer, not an error
    clean = await (await api.post("/v1/batch/get", json={"keys": ["a", "missing"]})).json()
    assert clean["errors"] is False
    for bad in ({"keys": "a"}, {"keys": []}, {"keys": ["a"], "r": "all"}):
        assert (await api.post("/v1/batch/get", json=bad)).status == 400
