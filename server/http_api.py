"""The HTTP API: a thin aiohttp layer over `Node` (parse, validate, call, render).

Every route's handler is wrapped in one `_endpoint` that checks the token, times the request for /metrics and turns
any escaping exception into the JSON error body (via `server.http_errors`). Unknown paths and methods are routes too
(a catch-all and a per-path fallback), so their 404/405 go through the same wrapper. (An aiohttp middleware did the
same job, but it puts every request through aiohttp's middleware chain and one more coroutine: about 5% of a GET's
CPU, measured A/B.) Handlers validate everything (key, query options, body) before calling the node, and the node
checks the key's type before touching state: a rejected request changes nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rumor.server.batch import answer, error_result, outcome_result, parse_keys, parse_updates
from rumor.server.consistency import MAX_TIMEOUT_MS, Consistency, parse_consistency
from rumor.server.errors import (
    InvalidOptionError,
    KeyNotFoundError,
    MalformedBodyError,
    PayloadTooLargeError,
    ServerError,
    UnauthorizedError,
    UnknownFieldError,
)
from rumor.server.http_errors import response_for
from rumor.server.http_request import int_option, op_id_of, path_key, query_options
from rumor.server.keyspace import Item
from rumor.server.negotiation import decode_body, encode_body, request_format, response_format
from rumor.server.node import Node, Outcome, WriteResult
from rumor.server.openapi import document_json
from rumor.server.ops_http import UI_FILES, ops_routes
from rumor.server.ops_view import OpsView
from rumor.server.updates import OP_ID_HINT, RegisterWrite, parse_context, parse_update
from rumor.server.version import VERSION
from rumor.server.watch_http import watch_route

if TYPE_CHECKING:
    from rumor.server.cluster import Cluster  # the single-node app (tests, embedding) never loads the gossip stack

log = logging.getLogger(__name__)

NODE_KEY: web.AppKey[Node] = web.AppKey("node", Node)
CLUSTER_KEY: web.AppKey[Cluster] = web.AppKey("cluster")
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
_PUBLIC_PATHS = frozenset({"/health", *UI_FILES})  # the dashboard's static files hold no data (`server.ops_http`)
#: counted in /metrics for a request whose client disconnected before the answer (nginx's convention); never sent
CLIENT_CLOSED_REQUEST = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: route patterns match every character: `.` stops at a newline, and `/v1/kv/%0A` would then miss every route and get
#: aiohttp's plain-text 404 instead of ours
_ANY_CHARS = r"[\s\S]"


def _endpoint(handler: Handler, route: str) -> Handler:
    """`handler` with authentication, metrics under the route's name, and errors rendered as JSON."""

    async def endpoint(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE_KEY]
        started = time.perf_counter()
        try:
            _authenticate(request, node.config.api_token)
            response = await handler(request)
        except asyncio.CancelledError:  # a server run with handler_cancellation cancels when the client leaves
            if _client_gone(request):
                node.metrics.http_requests.inc(route, request.method, str(CLIENT_CLOSED_REQUEST))
            raise
        except ConnectionResetError as exc:
            if not _client_gone(request):
                response = response_for(exc)
            else:  # the client left mid-request (say, mid-body): nobody to answer, and nothing failed here
                log.debug("client %s went away during %s %s", request.remote, request.method, route)
                response = web.Response(status=CLIENT_CLOSED_REQUEST)
        except Exception as exc:  # the single place errors become responses
            response = response_for(exc)
        node.metrics.http_requests.inc(route, request.method, str(response.status))
        node.metrics.http_latency.observe(time.perf_counter() - started, route, request.method)
        return response

    return endpoint


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _authenticate(request: web.Request, token: str | None) -> None:
    if token is None or request.path in _PUBLIC_PATHS:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    # compare_digest on equal-type bytes: the time taken does not depend on how much of the token matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise UnauthorizedError("missing or wrong API token (send 'Authorization: Bearer <token>')")


async def _body(request: web.Request, *, optional: bool = False) -> Any:
    """Reads and decodes the body, enforcing the size limit before decoding anything."""
    limit = request.app[NODE_KEY].config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(limit)
    fmt = request_format(request.headers.get("Content-Type"))
    data = await request.read()  # aiohttp enforces client_max_size (413) for chunked bodies too
    if len(data) > limit:
        raise PayloadTooLargeError(limit)
    if not data:
        if optional:
            return None
        raise MalformedBodyError("a body is required")
    return decode_body(data, fmt)


def _render(request: web.Request, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    fmt = response_format(request.headers.get("Accept"))
    return web.Response(body=encode_body(value, fmt), status=status, content_type=fmt, headers=headers)


def _item_response(request: web.Request, item: Item, headers: dict[str, str] | None = None) -> web.Response:
    """An item as a read shows it; its body bytes are encoded once per format and reused while the key is unchanged."""
    fmt = response_format(request.headers.get("Accept"))
    return web.Response(body=item.encoded(fmt, encode_body), content_type=fmt, headers=headers)


def _outcome_response(request: web.Request, outcome: Outcome, headers: dict[str, str] | None = None) -> web.Response:
    assert outcome.item is not None
    if outcome.satisfied:
        return _item_response(request, outcome.item, headers)
    body = outcome.item.to_json() | {"acks": outcome.acks, "required": outcome.required}
    return _render(request, body, 202, headers)


def _write_response(request: web.Request, result: WriteResult) -> web.StreamResponse:
    headers = {"X-Rumor-Replayed": "true"} if result.replayed else None
    if result.item is None:
        return web.Response(status=204, headers=headers)
    return _outcome_response(request, result, headers)


_DEFAULT_CONSISTENCY = Consistency()


def _consistency(options: dict[str, str], name: str) -> Consistency:
    if not options:
        return _DEFAULT_CONSISTENCY
    timeout = options.get("timeout_ms")
    timeout_ms = None if timeout is None else int_option("timeout_ms", timeout, 1, MAX_TIMEOUT_MS)
    return parse_consistency(options.get(name), timeout_ms, name=name)


# -- handlers ----------------------------------------------------------------------------------------------------------

_READ_OPTIONS = frozenset({"r", "timeout_ms"})
_WRITE_OPTIONS = frozenset({"w", "timeout_ms"})
_PUT_OPTIONS = _WRITE_OPTIONS | {"context"}
_DELETE_BODY_FIELDS = frozenset({"context"})
_BATCH_OPTIONS = _WRITE_OPTIONS | {"items"}


async def get_item(request: web.Request) -> web.StreamResponse:
    """With r > 1 and fewer replicas answering in time: 202 and the merged item with `acks`/`required` (or a 404
    saying how many answered), like a write that missed its w."""
    key = path_key(request)
    options = query_options(request, _READ_OPTIONS)
    outcome = await request.app[NODE_KEY].read_outcome(key, _consistency(options, "r"))
    if outcome.item is None:
        details = []
        if not outcome.satisfied:
            details.append(f"{outcome.acks} of the {outcome.required} replicas asked for answered in time")
        kept_type = request.app[NODE_KEY].keyspace.type_of(key)
        if kept_type is not None:  # emptied by a delete or removes: writes of another type get 409, say why now
            details.append(f"it was emptied and stays a {kept_type}")
        raise KeyNotFoundError(key, "; ".join(details) or None)
    return _outcome_response(request, outcome)


async def put_item(request: web.Request) -> web.StreamResponse:
    key = path_key(request)
    options = query_options(request, _PUT_OPTIONS)
    consistency = _consistency(options, "w")
    op_id = op_id_of(request)
    update = RegisterWrite(value=await _body(request), **parse_context(options.get("context")))
    result = await request.app[NODE_KEY].update(key, update, op_id=op_id, consistency=consistency)
    return _write_response(request, result)


async def post_item(request: web.Request) -> web.StreamResponse:
    key = path_key(request)
    consistency = _consistency(query_options(request, _WRITE_OPTIONS), "w")
    op_id = op_id_of(request)
    update = parse_update(await _body(request))
    result = await request.app[NODE_KEY].update(key, update, op_id=op_id, consistency=consistency)
    return _write_response(request, result)


async def delete_item(request: web.Request) -> web.StreamResponse:
    """The context comes from the query or from an optional body `{"context": ...}`; the op_id from its header."""
    key = path_key(request)
    options: dict[str, Any] = query_options(request, _PUT_OPTIONS)
    op_id = op_id_of(request)
    body = await _body(request, optional=True)
    if body is not None:
        if not isinstance(body, dict):
            raise MalformedBodyError("a DELETE body must be an object with a 'context'")
        unknown = set(body) - _DELETE_BODY_FIELDS
        if unknown:
            raise UnknownFieldError(sorted(unknown), hint=OP_ID_HINT if "op_id" in unknown else None)
        twice = set(body) & set(options)
        if twice:
            raise InvalidOptionError(f"given both in the query and the body: {', '.join(sorted(twice))}")
        options |= body
    consistency = _consistency({k: v for k, v in options.items() if k in _WRITE_OPTIONS}, "w")
    context = parse_context(options.get("context"))
    result = await request.app[NODE_KEY].delete(key, context.get("context"), op_id=op_id, consistency=consistency,
                                                context_binding=context.get("context_binding"))
    return _write_response(request, result)


async def post_batch(request: web.Request) -> web.StreamResponse:
    """Many typed updates in order, one group commit, a result per update (`server.batch`); `?w=` for each."""
    options = query_options(request, _BATCH_OPTIONS)
    items = options.pop("items", "false")
    if items not in ("true", "false"):
        raise InvalidOptionError("items must be true or false")
    consistency = _consistency(options, "w")
    entries = parse_updates(await _body(request))
    writes = [e for e in entries if len(e) == 3]
    done = iter(await request.app[NODE_KEY].update_batch(writes, consistency,  # type: ignore[arg-type]
                                                         items=items == "true"))
    results = []
    for entry in entries:
        outcome = entry[1] if len(entry) == 2 else next(done)
        results.append(error_result(entry[0], outcome) if isinstance(outcome, ServerError)
                       else outcome_result(entry[0], outcome))
    return _render(request, answer(results))


async def post_batch_get(request: web.Request) -> web.StreamResponse:
    """Many reads in one request (`server.batch`); `?r=` for each, the replicas asked concurrently."""
    consistency = _consistency(query_options(request, _READ_OPTIONS), "r")
    node = request.app[NODE_KEY]
    keys = parse_keys(await _body(request))
    wanted = [k for k in keys if isinstance(k, str)]
    read = iter(await asyncio.gather(*(node.read_outcome(k, consistency) for k in wanted)))
    results = [error_result(k[0], k[1]) if isinstance(k, tuple) else outcome_result(k, next(read)) for k in keys]
    return _render(request, answer(results))


async def list_keys(request: web.Request) -> web.StreamResponse:
    options = query_options(request, frozenset({"prefix", "after", "limit"}))
    limit = int_option("limit", options.get("limit", str(DEFAULT_LIST_LIMIT)), 1, MAX_LIST_LIMIT)
    page = request.app[NODE_KEY].keys(options.get("prefix", ""), options.get("after"), limit)
    return _render(request, {"keys": [{"key": k, "type": t} for k, t in page.keys], "next": page.next})


async def members(request: web.Request) -> web.StreamResponse:
    cluster = request.app.get(CLUSTER_KEY)
    listed = cluster.members() if cluster is not None else request.app[NODE_KEY].members()
    return _render(request, {"members": listed})


async def cluster_view(request: web.Request) -> web.StreamResponse:
    """This node and every member it knows (status, incarnation, gossip and HTTP addresses), plus replication state."""
    query_options(request, frozenset())
    cluster = request.app.get(CLUSTER_KEY)
    if cluster is not None:
        return _render(request, cluster.view())
    node = request.app[NODE_KEY]
    listed = [m | {"self": m["id"] == node.node_id} for m in node.members()]
    me = next((m for m in listed if m["self"]), None)
    return _render(request, {"node": me, "members": listed, "left": False, "partitioned_from": None})


async def cluster_leave(request: web.Request) -> web.StreamResponse:
    """Graceful leave: peers learn it at once (no suspicion); this node keeps serving its own reads and writes."""
    query_options(request, frozenset())
    cluster = request.app.get(CLUSTER_KEY)
    if cluster is not None:
        await cluster.leave()
        return _render(request, cluster.view())
    return _render(request, {"left": True, "members": request.app[NODE_KEY].members()})


async def debug_partition(request: web.Request) -> web.StreamResponse:
    """`{"block": [member ids or gossip addresses]}` cuts this node off from them; `{"block": []}` heals."""
    query_options(request, frozenset())
    body = await _body(request)
    if not isinstance(body, dict) or set(body) != {"block"} or not isinstance(body["block"], list) \
            or not all(isinstance(name, str) for name in body["block"]):
        raise MalformedBodyError('expected {"block": [member id or host:port, ...]}')
    blocked = request.app[CLUSTER_KEY].partition(body["block"])
    return _render(request, {"blocked": blocked})


async def health(request: web.Request) -> web.StreamResponse:
    """Liveness is answering at all; readiness (status 200 vs 503) is 'started, storage healthy and no background
    component failed lately'. A 503 says why in `failing`, {component: one-line reason}, so an operator reading the
    probe knows where to look without opening the log first."""
    node = request.app[NODE_KEY]
    failing = node.failing()
    ready = not failing
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "node": node.node_id, "ready": ready,
                            "durable": node.storage.durable, "version": VERSION}
    if failing:
        body["failing"] = failing
    return _render(request, body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    return web.Response(body=node.metrics.render().encode(), headers={"Content-Type": node.metrics.CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 contract (`server.openapi`): JSON whatever `Accept` says; behind the token like the rest."""
    query_options(request, frozenset())
    return web.Response(body=document_json(), content_type="application/json")


async def _unmatched(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def _method_not_allowed(allowed: list[str]) -> Handler:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, allowed)

    return refuse


def create_app(node: Node, cluster: Cluster | None = None) -> web.Application:
    """The aiohttp application for `node` (which the caller starts and stops), with `cluster` when it is a member.

    The fault-injection route exists only with a cluster and `enable_fault_injection`: off, it is a plain 404.
    """
    app = web.Application(client_max_size=node.config.max_body_bytes)
    app[NODE_KEY] = node
    if cluster is not None:
        app[CLUSTER_KEY] = cluster
    routes: dict[str, list[tuple[str, Handler]]] = {
        "/health": [("GET", health)],
        "/metrics": [("GET", metrics)],
        "/v1/members": [("GET", members)],
        "/v1/cluster": [("GET", cluster_view)],
        "/v1/cluster/leave": [("POST", cluster_leave)],
        "/v1/kv": [("GET", list_keys)],
        "/v1/batch": [("POST", post_batch)],
        "/v1/batch/get": [("POST", post_batch_get)],
        "/v1/watch": [("GET", watch_route(app, node))],  # the change feed (`server.watch_http`)
        "/v1/openapi.json": [("GET", openapi_document)],
        f"/v1/kv/{{key:{_ANY_CHARS}+}}": [("GET", get_item), ("PUT", put_item), ("POST", post_item),
                                          ("DELETE", delete_item)],
    }
    routes.update(ops_routes(app, OpsView(node, cluster)))  # convergence and the dashboard (`server.ops_http`)
    if cluster is not None and node.config.enable_fault_injection:
        routes["/v1/debug/partition"] = [("POST", debug_partition)]
    for path, handlers in routes.items():
        name = path.replace(f"{{key:{_ANY_CHARS}+}}", "{key}")  # the route's label in /metrics
        for method, handler in handlers:
            if method == "GET":
                app.router.add_get(path, _endpoint(handler, name))  # and HEAD
            else:
                app.router.add_route(method, path, _endpoint(handler, name))
        methods = {method for method, _ in handlers}
        allowed = sorted(methods | {"HEAD"} if "GET" in methods else methods)
        app.router.add_route("*", path, _endpoint(_method_not_allowed(allowed), name))  # any other method: 405
    app.router.add_route("*", f"/{{path:{_ANY_CHARS}*}}", _endpoint(_unmatched, "unmatched"))
    return app
