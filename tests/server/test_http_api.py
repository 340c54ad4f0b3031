"""Every endpoint, option and error of the HTTP API, through aiohttp's test client against a real `Node`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient

from rumor.crdt import ORSet
from rumor.server.node import Node
from rumor.server.version import VERSION

pytestmark = pytest.mark.integration  # every test reaches the node through aiohttp's TestServer: a loopback socket

JSON_HEADERS = {"Content-Type": "application/json"}
DEEP: Any = 1
for _ in range(40):
    DEEP = [DEEP]
MSGPACK_HEADERS = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}


async def post(api: TestClient, key: str, body: dict[str, Any], status: int = 200, **params: str) -> Any:
    response = await api.post(f"/v1/kv/{key}", json=body, params=params)
    payload = await response.json() if response.status != 204 else None
    assert response.status == status, payload
    return payload


async def get(api: TestClient, key: str, status: int = 200, **params: str) -> Any:
    response = await api.get(f"/v1/kv/{key}", params=params)
    payload = await response.json()
    assert response.status == status, payload
    return payload


async def error_code(response: Any, status: int) -> str:
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]["code"]


# -- values of every type ----------------------------------------------------------------------------------------------


async def test_put_then_get_register(api: TestClient) -> None:
    response = await api.put("/v1/kv/greeting", json={"hello": ["world", 1, None]})
    assert response.status == 200
    item = await response.json()
    assert item["key"] == "greeting" and item["type"] == "register"
    assert item["value"] == {"hello": ["world", 1, None]}
    assert isinstance(item["context"], str)
    assert await get(api, "greeting") == item


async def test_register_later_write_wins_even_when_the_clock_goes_back(api: TestClient, clock: Any) -> None:
    await api.put("/v1/kv/r", json="first")
    clock.now -= 60_000  # the wall clock jumps back a minute: the HLC still orders the second write later
    await api.put("/v1/kv/r", json="second")
    assert (await get(api, "r"))["value"] == "second"


async def test_counter_increments_and_decrements(api: TestClient) -> None:
    await post(api, "hits", {"type": "counter", "increment": 5})
    item = await post(api, "hits", {"type": "counter", "increment": -7})
    assert item["value"] == -2 and item["type"] == "counter"
    assert (await get(api, "hits"))["value"] == -2


async def test_set_add_remove_and_sorted_json_values(api: TestClient) -> None:
    elements = ["b", 2, "a", True, None, 1.5, [1, 2], {"k": 1}, 1, False]
    await post(api, "s", {"type": "set", "add": elements})
    item = await post(api, "s", {"type": "set", "remove": ["b", [1, 2]]})
    assert item["value"] == [None, False, True, 1, 1.5, 2, "a", {"k": 1}]
    # 1 and true and 1.0 are distinct elements, whatever Python's equality says
    response = await api.post("/v1/kv/s", json={"type": "set", "add": [1.0]})
    assert '"value":[null,false,true,1,1.0,1.5,2,"a",{"k":1}]' in await response.text()


async def test_map_set_and_remove_fields(api: TestClient) -> None:
    await post(api, "m", {"type": "map", "set": {"b": 2, "a": {"nested": [1]}}})
    item = await post(api, "m", {"type": "map", "set": {"c": None}, "remove": ["b"]})
    assert item["value"] == {"a": {"nested": [1]}, "c": None}


async def test_mvregister_keeps_concurrent_siblings(api: TestClient, node: Node) -> None:
    first = await post(api, "mv", {"type": "mvregister", "value": "mine"})
    assert first["value"] == ["mine"]
    from rumor.crdt import MVRegister

    remote = MVRegister().write("n2", "theirs")
    await node.merge_remote("mv", "mvregister", remote)
    assert sorted((await get(api, "mv"))["value"]) == ["mine", "theirs"]
    # a write with the read's context replaces both siblings
    context = (await get(api, "mv"))["context"]
    item = await post(api, "mv", {"type": "mvregister", "value": "merged", "context": context})
    assert item["value"] == ["merged"]


async def test_register_via_post(api: TestClient) -> None:
    item = await post(api, "r", {"type": "register", "value": [1, 2]})
    assert item["value"] == [1, 2] and item["type"] == "register"


# -- delete ------------------------------------------------------------------------------------------------------------


async def test_delete_then_get_is_404_and_listing_skips_it(api: TestClient) -> None:
    await post(api, "gone", {"type": "set", "add": ["x"]})
    response = await api.delete("/v1/kv/gone")
    assert response.status == 204
    assert await error_code(await api.get("/v1/kv/gone"), 404) == "not_found"
    assert (await (await api.get("/v1/kv")).json())["keys"] == []
    assert await error_code(await api.delete("/v1/kv/gone"), 404) == "not_found"


async def test_delete_keeps_a_concurrent_update_from_another_node(api: TestClient, node: Node) -> None:
    await post(api, "s", {"type": "set", "add": ["local"]})
    context = (await get(api, "s"))["context"]
    # another node adds concurrently (it never saw our state); the delta reaches us after our read
    await node.merge_remote("s", "set", ORSet().add("n2", "remote"))
    response = await api.delete("/v1/kv/s", params={"context": context})
    assert response.status == 200
    assert (await response.json())["value"] == ["remote"]
    assert (await get(api, "s"))["value"] == ["remote"]


async def test_delete_with_context_in_body(api: TestClient) -> None:
    await post(api, "c", {"type": "counter", "increment": 3})
    context = (await get(api, "c"))["context"]
    response = await api.delete("/v1/kv/c", json={"context": context}, headers={"Idempotency-Key": "d1"})
    assert response.status == 204
    assert await error_code(await api.delete("/v1/kv/c", json={"bogus": 1}), 400) == "unknown_field"
    assert await error_code(await api.delete("/v1/kv/c", json={"op_id": "d2"}), 400) == "unknown_field"


async def test_type_is_fixed_after_delete(api: TestClient) -> None:
    await post(api, "k", {"type": "counter", "increment": 1})
    await api.delete("/v1/kv/k")
    assert await error_code(await api.put("/v1/kv/k", json=1), 409) == "type_mismatch"


# -- contexts ----------------------------------------------------------------------------------------------------------


async def test_context_limits_a_remove_to_what_was_observed(api: TestClient) -> None:
    await post(api, "s", {"type": "set", "add": ["x"]})
    context = (await get(api, "s"))["context"]
    await post(api, "s", {"type": "set", "add": ["x"]})  # re-added after the read: a new dot the read did not see
    item = await post(api, "s", {"type": "set", "remove": ["x"], "context": context})
    assert item["value"] == ["x"]
    # no context: everything this node observed; the set is left empty, which reads as absent (like a delete)
    await post(api, "s", {"type": "set", "remove": ["x"]}, status=204)
    assert await error_code(await api.get("/v1/kv/s"), 404) == "not_found"


async def test_context_limits_an_mvregister_overwrite(api: TestClient, node: Node) -> None:
    from rumor.crdt import MVRegister

    await post(api, "mv", {"type": "mvregister", "value": "old"})
    context = (await get(api, "mv"))["context"]
    await node.merge_remote("mv", "mvregister", MVRegister().write("n2", "remote"))  # concurrent, unseen by the read
    item = await post(api, "mv", {"type": "mvregister", "value": "mine", "context": context})
    assert sorted(item["value"]) == ["mine", "remote"]  # "old" was observed and replaced; "remote" was not
    context = (await get(api, "mv"))["context"]
    item = await post(api, "mv", {"type": "mvregister", "value": "final", "context": context})
    assert item["value"] == ["final"]


async def test_register_write_after_a_future_timestamp_still_wins(api: TestClient, node: Node) -> None:
    from rumor.crdt import HLCTimestamp, LWWRegister

    # a value from a node whose clock runs far ahead: a later write here observes its timestamp and sorts after it
    await node.merge_remote("r", "register", LWWRegister().write("n2", "remote", HLCTimestamp(2**50, 0)))
    await api.put("/v1/kv/r", json="mine")
    assert (await get(api, "r"))["value"] == "mine"


@pytest.mark.parametrize("context", ["!!!not-base64!!!", "AAAA", 17, ""])
async def test_bad_context_is_400_and_changes_nothing(api: TestClient, context: Any) -> None:
    await post(api, "s", {"type": "set", "add": ["x"]})
    response = await api.post("/v1/kv/s", json={"type": "set", "remove": ["x"], "context": context})
    assert await error_code(response, 400) == "bad_context"
    assert (await get(api, "s"))["value"] == ["x"]


# -- op ids ------------------------------------------------------------------------------------------------------------


async def test_op_id_retry_is_applied_once(api: TestClient) -> None:
    body = {"type": "counter", "increment": 5}
    first_response = await api.post("/v1/kv/c", json=body, headers={"Idempotency-Key": "op-1"})
    first = await first_response.json()
    response = await api.post("/v1/kv/c", json=body, headers={"Idempotency-Key": "op-1"})
    assert response.status == 200 and response.headers["X-Rumor-Replayed"] == "true"
    assert await response.json() == first
    assert (await get(api, "c"))["value"] == 5
    await api.post("/v1/kv/c", json=body, headers={"Idempotency-Key": "op-2"})
    assert (await get(api, "c"))["value"] == 10


async def test_op_id_on_put(api: TestClient) -> None:
    await api.put("/v1/kv/r", json=1, headers={"Idempotency-Key": "p"})
    await api.put("/v1/kv/r", json=2)
    response = await api.put("/v1/kv/r", json=1, headers={"Idempotency-Key": "p"})
    assert (await response.json())["value"] == 1  # the stored answer of the first request
    assert (await get(api, "r"))["value"] == 2  # and it was not applied again
    response = await api.put("/v1/kv/r", json=1, params={"op_id": "p"})  # the old place: refused, saying where
    assert await error_code(response, 400) == "invalid_option"


# -- listing -----------------------------------------------------------------------------------------------------------


async def test_list_keys_with_prefix_and_cursor(api: TestClient) -> None:
    for name in ["a/3", "a/1", "b/1", "a/2", "a/4", "c"]:
        await api.put(f"/v1/kv/{name}", json=name)
    await post(api, "a/0", {"type": "counter", "increment": 1})
    page = await (await api.get("/v1/kv", params={"prefix": "a/", "limit": "2"})).json()
    assert page == {"keys": [{"key": "a/0", "type": "counter"}, {"key": "a/1", "type": "register"}], "next": "a/1"}
    page = await (await api.get("/v1/kv", params={"prefix": "a/", "limit": "2", "after": page["next"]})).json()
    assert [k["key"] for k in page["keys"]] == ["a/2", "a/3"]
    page = await (await api.get("/v1/kv", params={"prefix": "a/", "limit": "2", "after": page["next"]})).json()
    assert [k["key"] for k in page["keys"]] == ["a/4"] and page["next"] is None
    everything = await (await api.get("/v1/kv")).json()
    assert len(everything["keys"]) == 7


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "x"}, {"limit": "1001"}, {"bogus": "1"}])
async def test_list_keys_bad_options(api: TestClient, params: dict[str, str]) -> None:
    assert await error_code(await api.get("/v1/kv", params=params), 400) == "invalid_option"


# -- msgpack -----------------------------------------------------------------------------------------------------------


async def test_msgpack_round_trip(api: TestClient) -> None:
    body = msgpack.packb({"type": "set", "add": ["x", 1, [True]]})
    response = await api.post("/v1/kv/s", data=body, headers=MSGPACK_HEADERS)
    assert response.status == 200 and response.content_type == "application/msgpack"
    item = msgpack.unpackb(await response.read())
    assert item["value"] == [1, "x", [True]]
    response = await api.put("/v1/kv/r", data=msgpack.packb({"a": [1, 2.5]}), headers=MSGPACK_HEADERS)
    assert msgpack.unpackb(await response.read())["value"] == {"a": [1, 2.5]}
    response = await api.get("/v1/kv/r", headers={"Accept": "application/msgpack"})
    assert msgpack.unpackb(await response.read())["value"] == {"a": [1, 2.5]}
    response = await api.get("/v1/kv/r", headers={"Accept": "application/msgpack;q=0.5, application/json"})
    assert response.content_type == "application/json"


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"\x92\x01", msgpack.packb({"type": "register", "value": b"bytes"}), msgpack.packb({1: 2}),
     msgpack.packb({"type": "counter", "increment": 1}) + b"\x00"],
    ids=["reserved-byte", "truncated", "bytes-value", "int-key", "trailing-data"],
)
async def test_bad_msgpack_is_400(api: TestClient, data: bytes) -> None:
    response = await api.post("/v1/kv/k", data=data, headers=MSGPACK_HEADERS)
    body = await response.json()
    assert response.status == 400 and body["error"]["code"] in {"malformed_body", "invalid_value"}
    assert not body["error"]["message"].endswith(": ")  # every rejection names its reason
    assert await error_code(await api.get("/v1/kv/k"), 404) == "not_found"


# -- request errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"{", b"", b"[1,", b"NaN", b'{"type": "counter", "increment": Infinity}', b"\xff"])
async def test_bad_json_is_400(api: TestClient, data: bytes) -> None:
    response = await api.post("/v1/kv/k", data=data, headers=JSON_HEADERS)
    assert await error_code(response, 400) == "malformed_body"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "counter", "increment": 1, "extra": 1}, "unknown_field"),
        ({"type": "counter", "add": [1]}, "unknown_field"),
        ({"type": "counter", "increment": 0}, "invalid_operation"),
        ({"type": "counter", "increment": "1"}, "invalid_operation"),
        ({"type": "counter", "increment": True}, "invalid_operation"),
        ({"type": "counter"}, "invalid_operation"),
        ({"type": "gcounter", "increment": 1}, "invalid_operation"),
        ({"increment": 1}, "invalid_operation"),
        ({"type": "set", "add": "x"}, "invalid_operation"),
        ({"type": "set", "add": ["x"], "remove": ["x"]}, "invalid_operation"),
        ({"type": "map", "set": [1]}, "invalid_operation"),
        ({"type": "map", "remove": [1]}, "invalid_operation"),
        ({"type": "map", "set": {"a": 1}, "remove": ["a"]}, "invalid_operation"),
        ({"type": "register", "value": 1, "op_id": "x"}, "unknown_field"),
        ({"type": "set", "add": []}, "invalid_operation"),
        ({"type": "set", "add": [], "remove": []}, "invalid_operation"),
        ({"type": "map", "set": {}}, "invalid_operation"),
        ({"type": "register", "value": 2**63}, "invalid_value"),
        ({"type": "set", "add": ["\ud800"]}, "invalid_value"),
        ({"type": "map", "set": {"\udfff": 1}}, "invalid_value"),
        ({"type": "map", "remove": ["\udfff"]}, "invalid_value"),
        ({"type": "mvregister", "value": {"a": ["\ud800"]}}, "invalid_value"),
        ([1, 2], "malformed_body"),
        ({"type": "register", "value": DEEP}, "invalid_value"),
    ],
)
async def test_invalid_updates_are_400_and_change_nothing(api: TestClient, body: Any, code: str) -> None:
    response = await api.post("/v1/kv/k", json=body)
    assert await error_code(response, 400) == code
    assert await error_code(await api.get("/v1/kv/k"), 404) == "not_found"


async def test_type_mismatch_is_409_and_changes_nothing(api: TestClient) -> None:
    await post(api, "k", {"type": "counter", "increment": 1})
    for body in ({"type": "set", "add": ["x"]}, {"type": "mvregister", "value": 1}):
        response = await api.post("/v1/kv/k", json=body)
        assert await error_code(response, 409) == "type_mismatch"
    assert await error_code(await api.put("/v1/kv/k", json="v"), 409) == "type_mismatch"
    assert (await get(api, "k"))["value"] == 1


async def test_unsupported_media_type_is_415(api: TestClient) -> None:
    response = await api.post("/v1/kv/k", data=b"x=1", headers={"Content-Type": "text/plain"})
    assert await error_code(response, 415) == "unsupported_media_type"


async def test_the_first_curl_works_a_form_content_type_is_read_as_json(api: TestClient) -> None:
    """`curl -X PUT localhost:7000/v1/kv/k -d '"v"'` labels its body application/x-www-form-urlencoded."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await api.put("/v1/kv/k", data=b'"v"', headers=form)
    assert response.status == 200 and (await response.json())["value"] == "v"
    response = await api.post("/v1/kv/c", data=b'{"type": "counter", "increment": 2}', headers=form)
    assert response.status == 200 and (await response.json())["value"] == 2
    assert await error_code(await api.put("/v1/kv/k", data=b"x=1", headers=form), 400) == "malformed_body"


async def test_oversized_body_is_413(make_api: Callable[..., Any]) -> None:
    _, api = await make_api(max_body_bytes=100)
    response = await api.put("/v1/kv/k", json="x" * 200)
    assert await error_code(response, 413) == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: aiohttp's reader enforces the limit
        for _ in range(10):
            yield b'"' + b"x" * 30

    response = await api.put("/v1/kv/k", data=chunks(), headers=JSON_HEADERS)
    assert response.status == 413
    assert await error_code(await api.get("/v1/kv/k"), 404) == "not_found"
    assert (await api.put("/v1/kv/k", json="small")).status == 200


async def test_key_length_limits(api: TestClient) -> None:
    assert (await api.put("/v1/kv/" + "k" * 1024, json=1)).status == 200
    assert await error_code(await api.put("/v1/kv/" + "k" * 1025, json=1), 400) == "invalid_key"
    assert await error_code(await api.put("/v1/kv/" + "é" * 513, json=1), 400) == "invalid_key"  # 1026 bytes
    assert (await api.put("/v1/kv/a/b%20c", json=1)).status == 200
    assert (await get(api, "a/b%20c"))["key"] == "a/b c"


async def test_unknown_route_and_method(api: TestClient) -> None:
    assert await error_code(await api.get("/v2/nothing"), 404) == "not_found"
    response = await api.patch("/v1/kv/k", json=1)
    assert await error_code(response, 405) == "method_not_allowed"
    assert "PUT" in response.headers["Allow"]


@pytest.mark.parametrize("params", [{"w": "2"}, {"w": "most"}, {"timeout_ms": "0"}, {"timeout_ms": "-5"},
                                    {"timeout_ms": "999999"}, {"x": "1"}])
async def test_bad_write_options_are_400(api: TestClient, params: dict[str, str]) -> None:
    response = await api.post("/v1/kv/c", json={"type": "counter", "increment": 1}, params=params)
    assert await error_code(response, 400) == "invalid_option"
    assert await error_code(await api.get("/v1/kv/c"), 404) == "not_found"


@pytest.mark.parametrize("level", ["1", "quorum", "all"])
async def test_consistency_levels_are_met_by_a_single_node(api: TestClient, level: str) -> None:
    await post(api, "c", {"type": "counter", "increment": 1}, w=level, timeout_ms="500")
    response = await api.get("/v1/kv/c", params={"r": level, "timeout_ms": "500"})
    assert response.status == 200
    assert await error_code(await api.get("/v1/kv/c", params={"r": "two"}), 400) == "invalid_option"


# -- auth, health, metrics, members ------------------------------------------------------------------------------------


async def test_token_auth(make_api: Callable[..., Any]) -> None:
    _, api = await make_api(api_token="s3cret")
    assert await error_code(await api.get("/v1/kv"), 401) == "unauthorized"
    wrong = {"Authorization": "Bearer s3cre"}
    assert await error_code(await api.put("/v1/kv/k", json=1, headers=wrong), 401) == "unauthorized"
    assert await error_code(await api.put("/v1/kv/k", json=1, headers={"Authorization": "s3cret"}), 401)
    right = {"Authorization": "Bearer s3cret"}
    assert (await api.put("/v1/kv/k", json=1, headers=right)).status == 200
    assert (await api.get("/v1/kv/k", headers=right)).status == 200
    assert (await api.get("/metrics")).status == 401
    assert (await api.get("/health")).status == 200  # probes need no token


async def test_health_members_and_metrics(api: TestClient, node: Node) -> None:
    health = await (await api.get("/health")).json()
    assert health == {"status": "ok", "node": "n1", "ready": True, "durable": False, "version": VERSION}
    members = await (await api.get("/v1/members")).json()
    assert members == {"members": [{"id": "n1", "address": "127.0.0.1:7946", "status": "alive"}]}
    await api.put("/v1/kv/k", json=1)
    await api.get("/v1/kv/missing")
    response = await api.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    assert 'rumor_http_requests_total{route="/v1/kv/{key}",method="PUT",status="200"} 1' in text
    assert 'rumor_http_requests_total{route="/v1/kv/{key}",method="GET",status="404"} 1' in text
    assert 'rumor_http_request_duration_seconds_count{route="/v1/kv/{key}",method="PUT"} 1' in text
    assert 'rumor_http_request_duration_seconds_count{route="/v1/kv/{key}",method="GET"} 1' in text
    assert "rumor_keys 1" in text
    for hook in ("rumor_members", "rumor_gossip_bytes_total", "rumor_gossip_packets_total",
                 "rumor_gossip_dropped_packets_total", "rumor_anti_entropy_exchanges_total",
                 "rumor_storage_commit_duration_seconds"):
        assert f"# TYPE {hook} " in text


async def test_health_is_503_once_the_node_stopped(api: TestClient, node: Node) -> None:
    await node.stop()
    response = await api.get("/health")
    assert response.status == 503 and (await response.json())["ready"] is False
    assert await error_code(await api.get("/v1/kv/k"), 503) == "unavailable"


class ThreeNodesOneSilent:
    """A stand-in replication layer: three replicas, one acknowledges writes and answers reads, one never does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def start(self, node: Node) -> None:
        pass

    async def stop(self) -> None:
        pass

    def cluster_size(self) -> int:
        return 3

    async def replicate(self, key: str, type_name: str, delta: Any, needed: int, timeout_s: float) -> int:
        self.calls.append(("replicate", needed))
        return min(needed, 1)

    async def gather(self, key: str, needed: int, timeout_s: float) -> int:
        self.calls.append(("gather", needed))
        return min(needed, 1)

    def members(self) -> list[dict[str, Any]]:
        return []


async def test_write_levels_through_the_replication_seam() -> None:
    from aiohttp.test_utils import TestServer

    from rumor.server.config import ServerConfig
    from rumor.server.http_api import create_app

    replication = ThreeNodesOneSilent()
    async with Node(ServerConfig(in_memory=True, node_id="n1"), replication=replication) as node, \
            TestClient(TestServer(create_app(node))) as api:
        assert (await post(api, "c", {"type": "counter", "increment": 1}, w="quorum"))["value"] == 1
        accepted = await post(api, "c", {"type": "counter", "increment": 1}, status=202, w="all", timeout_ms="50")
        assert accepted["value"] == 2 and (accepted["acks"], accepted["required"]) == (2, 3)
        await post(api, "c", {"type": "counter", "increment": 1})  # w=1: nobody else is asked
        assert (await get(api, "c", r="quorum"))["value"] == 3  # one other replica answered: enough
        partial = await get(api, "c", status=202, r="all", timeout_ms="50")  # the silent one never does
        assert partial["value"] == 3 and (partial["acks"], partial["required"]) == (2, 3)
        missing = await api.get("/v1/kv/nothing", params={"r": "all", "timeout_ms": "50"})
        assert await error_code(missing, 404) == "not_found"
        assert "2 of the 3 replicas" in (await missing.json())["error"]["message"]
        assert replication.calls == [("replicate", 1), ("replicate", 2), ("gather", 1), ("gather", 2), ("gather", 2)]
