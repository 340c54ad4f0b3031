"""The OpenAPI contract (`server.openapi`) is valid OpenAPI 3.1 and documents exactly the routes the app registers:
a route added without its documentation, or documentation left behind by a removed route, fails here."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from rumor.server import http_api, openapi, watch
from rumor.server.cluster import UnknownPeerError
from rumor.server.config import ServerConfig
from rumor.server.http_api import create_app
from rumor.server.node import Node
from rumor.server.openapi import FAULT_INJECTION, document
from rumor.server.openapi_schemas import CURSOR_PATTERN

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def registered_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of each route, leaving out what no handler of ours serves by name: the HEAD that
    aiohttp adds to every GET, and the `*` routes (each path's 405 for other methods, the catch-all 404)."""
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.method not in ("HEAD", "*") and route.resource is not None}


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item if method in _METHODS}


def every_route_app() -> web.Application:
    """The app with every route it can register: fault injection on and a cluster (a stand-in: building the app
    never touches it)."""
    node = Node(ServerConfig(in_memory=True, node_id="n1", enable_fault_injection=True))
    return create_app(node, object())  # type: ignore[arg-type]


def test_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # raises, naming the offending part, if it is not


def test_documented_operations_are_exactly_the_registered_routes() -> None:
    registered = registered_operations(every_route_app())
    documented = documented_operations(document())
    assert ("POST", "/v1/debug/partition") in registered
    assert sorted(registered - documented) == [], "routes the app registers that the contract does not document"
    assert sorted(documented - registered) == [], "operations the contract documents that the app does not serve"


def test_fault_injection_routes_are_marked() -> None:
    """What `create_app` registers only with fault injection on is marked so, and nothing else is."""
    plain = registered_operations(create_app(Node(ServerConfig(in_memory=True, node_id="n1"))))
    doc = document()
    marked = {(method.upper(), path) for path, item in doc["paths"].items() for method, op in item.items()
              if method in _METHODS and op.get(FAULT_INJECTION)}
    assert marked == registered_operations(every_route_app()) - plain == {("POST", "/v1/debug/partition")}


def test_every_route_but_health_takes_the_token() -> None:
    doc = document()
    assert doc["security"] == [{"bearerAuth": []}]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            public = op.get("security") == []
            assert public == (path in http_api._PUBLIC_PATHS), (method, path)
            assert ("401" not in op["responses"]) == public, (method, path)


def test_documented_limits_and_codes_are_the_servers() -> None:
    """What the contract states but cannot import without a cycle (http_api imports it) or the gossip stack."""
    assert openapi.LIST_LIMIT_MAX == http_api.MAX_LIST_LIMIT
    assert openapi.LIST_LIMIT_DEFAULT == http_api.DEFAULT_LIST_LIMIT
    partition_400 = document()["paths"]["/v1/debug/partition"]["post"]["responses"]["400"]
    codes = partition_400["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"]
    assert UnknownPeerError.code in codes
    assert f"^{watch._CURSOR.pattern}$" == CURSOR_PATTERN
    assert re.fullmatch(CURSOR_PATTERN, str(watch.Cursor("n1", "0123456789abcdef", 7)))


async def test_the_document_is_served_behind_the_token(make_api: Any) -> None:
    _, client = await make_api(api_token="s3cret")
    api: TestClient = client
    refused = await api.get("/v1/openapi.json")
    assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    token = {"Authorization": "Bearer s3cret"}
    served = await api.get("/v1/openapi.json", headers=token | {"Accept": "application/msgpack"})
    assert served.status == 200 and served.content_type == "application/json"
    assert await served.json() == document()
    bad_option = await api.get("/v1/openapi.json?format=yaml", headers=token)
    assert bad_option.status == 400 and (await bad_option.json())["error"]["code"] == "invalid_option"
