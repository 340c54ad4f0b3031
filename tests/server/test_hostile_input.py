"""Issue 12's found cases, one regression test each: input that must neither break a node nor lose data silently.

Each test names the case it pins. A rejected request must answer a 4xx with the JSON error shape and leave every
state byte-identical (compared through `crdt.encode`); the node must still answer /health 200 afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from rumor.crdt import encode
from rumor.server.node import Node

pytestmark = pytest.mark.integration  # every test reaches the node through aiohttp's TestServer: a loopback socket

Snapshot = dict[str, bytes]


def snapshot(node: Node) -> Snapshot:
    return {key: encode(node.keyspace.entry(key).state) for key in node.keyspace}  # type: ignore[union-attr]


async def error_code(response: Any, status: int) -> str:
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return str(body["error"]["code"])


async def healthy(api: TestClient) -> bool:
    return (await api.get("/health")).status == 200


# -- case 1: a lone surrogate anywhere in a value --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("s", {"type": "set", "add": ["\ud800"]}),
        ("r", {"type": "register", "value": ["fine", {"x": "\udc00"}]}),
        ("m", {"type": "map", "set": {"\ud800": 1}}),
        ("m", {"type": "map", "set": {"f": {"\ud800": 1}}}),
        ("v", {"type": "mvregister", "value": "a\udfffb"}),
    ],
)
async def test_lone_surrogates_are_refused_and_the_key_keeps_working(
    api: TestClient, node: Node, key: str, body: dict[str, Any]
) -> None:
    valid = {"s": {"type": "set", "add": ["ok"]}, "r": {"type": "register", "value": "ok"},
             "m": {"type": "map", "set": {"f": "ok"}}, "v": {"type": "mvregister", "value": "ok"}}[key]
    assert (await api.post(f"/v1/kv/{key}", json=valid)).status == 200
    before = snapshot(node)
    assert await error_code(await api.post(f"/v1/kv/{key}", json=body), 400) == "invalid_value"
    assert snapshot(node) == before
    assert (await api.post(f"/v1/kv/{key}", json=valid)).status == 200  # the next ordinary write works
    assert (await api.get(f"/v1/kv/{key}")).status == 200
    assert await healthy(api)


async def test_a_surrogate_in_a_put_value_changes_nothing(api: TestClient, node: Node) -> None:
    response = await api.put("/v1/kv/r", data=b'"\\ud800"', headers={"Content-Type": "application/json"})
    assert await error_code(response, 400) == "invalid_value"
    assert "r" not in node.keyspace


# -- case 2: op_ids are visible ASCII, and in one place -----------------------------------------------------------


@pytest.mark.parametrize("op_id", ["caf\u00e9", "has space", "x" * 257, ""])
async def test_a_bad_op_id_is_400_before_anything_is_applied(api: TestClient, node: Node, op_id: str) -> None:
    response = await api.post("/v1/kv/c", json={"type": "counter", "increment": 1}, headers={"Idempotency-Key": op_id})
    assert await error_code(response, 400) == "invalid_option"
    assert "c" not in node.keyspace
    assert await healthy(api)


# -- case 3: integer options take ASCII digits only ------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/kv", {"limit": "\u00b2"}),
    ("/v1/kv", {"limit": "\u0661\u0660"}),
    ("/v1/kv/k", {"timeout_ms": "\u00b2"}),
    ("/v1/kv/k", {"timeout_ms": "\u0661\u0660", "r": "quorum"}),
    ("/v1/kv", {"limit": "-1"}),
    ("/v1/kv", {"limit": "1e3"}),
])
async def test_integer_options_in_other_digits_are_400(api: TestClient, path: str, params: dict[str, str]) -> None:
    assert await error_code(await api.get(path, params=params), 400) == "invalid_option"


# -- case 4: keys are UTF-8 after strict percent-decoding ------------------------------------------------------------


@pytest.mark.parametrize("raw", ["/v1/kv/bad%FFkey", "/v1/kv/%ED%A0%80", "/v1/kv/bad%zzkey", "/v1/kv/trailing%",
                                 "/v1/kv/half%4"])
async def test_keys_that_do_not_decode_to_utf8_are_400(api: TestClient, node: Node, raw: str) -> None:
    response = await api.put(URL(raw, encoded=True), json=1)
    assert await error_code(response, 400) == "invalid_key"
    assert len(node.keyspace) == 0


async def test_an_escaped_percent_names_its_own_key(api: TestClient, node: Node) -> None:
    assert (await api.put(URL("/v1/kv/bad%25FFkey", encoded=True), json=1)).status == 200
    assert (await api.put(URL("/v1/kv/caf%C3%A9%2Fx", encoded=True), json=2)).status == 200
    assert sorted(node.keyspace) == ["bad%FFkey", "caf\u00e9/x"]
    response = await api.get(URL("/v1/kv?prefix=caf%C3%A9", encoded=True))
    assert [k["key"] for k in (await response.json())["keys"]] == ["caf\u00e9/x"]
    response = await api.get(URL("/v1/kv?prefix=%FF", encoded=True))
    assert await error_code(response, 400) == "invalid_option"


# -- case 5: a context works only on the key and type it was read from ------------------------------------------------


async def test_a_context_from_another_key_is_refused(api: TestClient, node: Node) -> None:
    await api.post("/v1/kv/a", json={"type": "set", "add": ["x", "y"]})
    context_of_a = (await (await api.get("/v1/kv/a")).json())["context"]
    await api.post("/v1/kv/b", json={"type": "set", "add": ["x"]})  # b's dots are covered by a's context too
    before = snapshot(node)
    response = await api.post("/v1/kv/b", json={"type": "set", "remove": ["x"], "context": context_of_a})
    assert await error_code(response, 400) == "bad_context"
    response = await api.delete("/v1/kv/b", params={"context": context_of_a})
    assert await error_code(response, 400) == "bad_context"
    assert snapshot(node) == before
    response = await api.post("/v1/kv/a", json={"type": "set", "remove": ["x"], "context": context_of_a})
    assert (await response.json())["value"] == ["y"]


# -- case 6: a client that leaves mid-body ---------------------------------------------------------------------------


async def test_a_client_that_disconnects_mid_body_is_not_an_error(
    api: TestClient, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    assert api.port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"POST /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                 b'{"type": "cou')
    await writer.drain()
    writer.close()
    for _ in range(400):  # bounded: the server sees the reset within a few loop turns
        if node.metrics.http_requests.get("/v1/kv/{key}", "POST", "499"):
            break
        await asyncio.sleep(0.005)
    assert node.metrics.http_requests.get("/v1/kv/{key}", "POST", "499") == 1
    assert node.metrics.http_requests.get("/v1/kv/{key}", "POST", "500") == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# -- case 7: every rejection names its reason ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"\xc1", b"\x92\x01", b"\x91" * 2000 + b"\x01"])
async def test_invalid_msgpack_says_why(api: TestClient, data: bytes) -> None:
    response = await api.post("/v1/kv/k", data=data, headers={"Content-Type": "application/msgpack"})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["message"].split(": ", 1)[1].strip()


# -- case 8: the integer range of stored values -----------------------------------------------------------------------


async def test_values_hold_signed_64_bit_integers_and_counters_any_size(api: TestClient) -> None:
    assert (await api.put("/v1/kv/r", json=2**63 - 1)).status == 200
    assert (await api.put("/v1/kv/r2", json=-(2**63))).status == 200
    for value in (2**63, -(2**63) - 1, 10**300):
        assert await error_code(await api.put("/v1/kv/r", json=value), 400) == "invalid_value"
    assert (await (await api.get("/v1/kv/r")).json())["value"] == 2**63 - 1
    response = await api.post("/v1/kv/c", json={"type": "counter", "increment": 10**30})
    assert (await response.json())["value"] == 10**30


# -- case 10: an op_id names one request ---------------------------------------------------------------------------


async def test_reusing_an_op_id_for_another_request_is_422(api: TestClient, node: Node) -> None:
    header = {"Idempotency-Key": "op-1"}
    assert (await api.post("/v1/kv/c", json={"type": "counter", "increment": 1}, headers=header)).status == 200
    before = snapshot(node)
    for method, path, body in (("POST", "/v1/kv/c", {"type": "counter", "increment": 2}),  # other body
                               ("POST", "/v1/kv/d", {"type": "counter", "increment": 1}),  # other key
                               ("PUT", "/v1/kv/c", 1),  # other type
                               ("DELETE", "/v1/kv/c", None)):
        response = await api.request(method, path, json=body, headers=header)
        assert await error_code(response, 422) == "op_id_conflict"
    assert snapshot(node) == before
    replay = await api.post("/v1/kv/c", json={"type": "counter", "increment": 1}, headers=header)
    assert replay.headers["X-Rumor-Replayed"] == "true" and (await replay.json())["value"] == 1


# -- cases 11 and 12: emptied keys and empty updates ----------------------------------------------------------------


async def test_a_deleted_key_says_it_keeps_its_type(api: TestClient) -> None:
    await api.post("/v1/kv/k", json={"type": "counter", "increment": 1})
    assert (await api.delete("/v1/kv/k")).status == 204
    response = await api.get("/v1/kv/k")
    assert await error_code(response, 404) == "not_found"
    assert "stays a counter" in (await response.json())["error"]["message"]
    response = await api.post("/v1/kv/k", json={"type": "set", "add": ["x"]})
    body = await response.json()
    assert response.status == 409 and "keeps its type" in body["error"]["message"]
    assert (await api.post("/v1/kv/k", json={"type": "counter", "increment": 2})).status == 200


async def test_a_remove_of_nothing_on_a_new_key_creates_no_key(api: TestClient, node: Node) -> None:
    response = await api.post("/v1/kv/new", json={"type": "set", "remove": ["ghost"]})
    assert response.status == 204
    assert "new" not in node.keyspace
    assert (await api.post("/v1/kv/new", json={"type": "counter", "increment": 1})).status == 200  # not typed


@pytest.mark.parametrize("body", [{"type": "set", "add": []}, {"type": "map", "set": {}},
                                  {"type": "map", "set": {}, "remove": []}])
async def test_empty_updates_are_400(api: TestClient, node: Node, body: dict[str, Any]) -> None:
    assert await error_code(await api.post("/v1/kv/k", json=body), 400) == "invalid_operation"
    assert "k" not in node.keyspace
