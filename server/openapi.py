"""The API's OpenAPI 3.1 contract, built as data (served at `GET /v1/openapi.json`).

Why Python and not a YAML file: the limits and error codes come from the definitions the server checks against
(`server.openapi_schemas` reads them), so they cannot drift apart, and no hand-kept copy needs a loader at runtime.
Two tests keep the rest true: `tests/server/test_openapi.py` holds the documented (method, path) pairs equal to the
routes `create_app` registers, and `tests/server/test_contract_fuzz.py` runs schemathesis against a live node (no 5xx,
every status, header and body as documented).

Routes that only exist with fault injection on carry `x-rumor-fault-injection: true`. Every route but `/health` takes
the bearer token when the node has one (`--api-token`), this document included.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from rumor.server import openapi_ops
from rumor.server.openapi_schemas import (
    BODY,
    HEADERS,
    KEYED,
    PARAMETERS,
    QUERY_ONLY,
    RESPONSES,
    SCHEMAS,
    UNKNOWN_PEER,
    WRITE,
    Schema,
    bad_request,
    content,
    ref,
    schema_ref,
)
from rumor.server.sse import CONTENT_TYPE as EVENT_STREAM
from rumor.server.watch_http import DEFAULT_TIMEOUT_MS as WATCH_DEFAULT_TIMEOUT_MS
from rumor.server.watch_http import MAX_TIMEOUT_MS as WATCH_MAX_TIMEOUT_MS

OPENAPI_VERSION = "3.1.0"
#: the extension that marks a route `create_app` registers only with `enable_fault_injection` on a cluster member
FAULT_INJECTION = "x-rumor-fault-injection"
#: documented by the list-keys operation; `server.http_api` holds the server's copies (a test compares them)
LIST_LIMIT_MAX = 1000
LIST_LIMIT_DEFAULT = 100
_STATUS = {"NotFound": "404", "TypeMismatch": "409", "PayloadTooLarge": "413", "UnsupportedMediaType": "415",
           "OpIdConflict": "422", "Unavailable": "503"}
_BODY_ERRORS = ("PayloadTooLarge", "UnsupportedMediaType")

_DESCRIPTION = """\
An available-first replicated key-value store whose values are CRDTs: any node answers any read or write.

- Bodies are JSON (also when sent without a Content-Type, or as `application/x-www-form-urlencoded`, curl's default)
  or msgpack (`application/msgpack`); answers are msgpack only when `Accept` prefers it. Error answers are always
  JSON: `{"error": {"code", "message"}}`, the `code` stable and machine-readable.
- Every route but `/health` needs `Authorization: Bearer <token>` when the node runs with `--api-token` (401 with
  `WWW-Authenticate: Bearer` otherwise); `/v1/openapi.json` too.
- A path this document lists answers any method it does not list with 405 and an `Allow` header (every GET also
  answers HEAD); any other path answers 404 `not_found`. Unknown or repeated query options are 400 `invalid_option`
  (`/health`, `/metrics` and `/v1/members` read no query, and ignore one).
- A 5xx other than 503 is a bug; 499 (client closed the request) is counted in `/metrics`, never sent.
- Known gap: a request line or a header over 8190 bytes is refused by the HTTP parser itself, with a plain-text 400
  instead of the error body (a valid key takes at most 3072 bytes percent-encoded: a long `context` query gets there).
"""


def _errors(bad: list[str] | None, *answers: str) -> dict[str, Schema]:
    out = {} if bad is None else {"400": bad_request(bad)}
    out.update({_STATUS[name]: ref("responses", name) for name in answers})
    return out


def _op(operation_id: str, summary: str, tag: str, responses: dict[str, Schema], *, params: tuple[str, ...] = (),
        query: tuple[Schema, ...] = (), body: Schema | None = None, body_required: bool = True,
        public: bool = False, description: str | None = None, extensions: Schema | None = None) -> Schema:
    op: Schema = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    parameters = [ref("parameters", name) for name in params] + list(query)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": content(body)}
    if public:
        op["security"] = []
    else:
        responses = responses | {"401": ref("responses", "Unauthorized")}
    op["responses"] = dict(sorted(responses.items()))
    return op | (extensions or {})


def _answer(description: str, schema: Schema, *, msgpack: bool = True) -> Schema:
    return {"description": description, "content": content(schema, msgpack=msgpack)}


def _item_answers(*, write: bool, no_content: bool = False) -> dict[str, Schema]:
    headers = {"headers": {"X-Rumor-Replayed": ref("headers", "X-Rumor-Replayed")}} if write else {}
    out = {
        "200": _answer("the item", schema_ref("Item")) | headers,
        "202": _answer("fewer replicas than asked for answered in time", schema_ref("ItemWithAcks")) | headers,
    }
    if no_content:
        out["204"] = {"description": "applied; the key is left without a value"} | headers
    return out


def _string_query(name: str, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}


def _kv_item() -> Schema:
    return {
        "parameters": [ref("parameters", "key")],
        "get": _op("getItem", "Read a key", "kv",
                   _item_answers(write=False) | _errors(KEYED, "NotFound", "Unavailable"), params=("r", "timeout_ms"),
                   description="With `r` > 1 and fewer replicas in time: 202 with what was merged, or a 404 saying how "
                               "many answered."),
        "put": _op("putItem", "Write a last-writer-wins register", "kv",
                   _item_answers(write=True) | _errors(WRITE, "TypeMismatch", "OpIdConflict", "Unavailable",
                                                       *_BODY_ERRORS),
                   params=("w", "timeout_ms", "context", "Idempotency-Key"), body=schema_ref("JsonValue")),
        "post": _op("postItem", "Apply a typed update", "kv",
                    _item_answers(write=True, no_content=True)
                    | _errors(WRITE, "TypeMismatch", "OpIdConflict", "Unavailable", *_BODY_ERRORS),
                    params=("w", "timeout_ms", "Idempotency-Key"), body=schema_ref("Update")),
        "delete": _op("deleteItem", "Observed-remove the whole key", "kv",
                      _item_answers(write=True, no_content=True)
                      | _errors(WRITE, "NotFound", "OpIdConflict", "Unavailable", *_BODY_ERRORS),
                      params=("w", "timeout_ms", "context", "Idempotency-Key"), body=schema_ref("DeleteBody"),
                      body_required=False,
                      description="Removes what this node (or the read whose context is passed) saw: 200 with the "
                                  "item when concurrent updates survive, 204 when nothing is left."),
    }


def _paths() -> dict[str, Schema]:
    return {
        "/health": {"get": _op("health", "Liveness and readiness", "operations", {
            "200": _answer("started, storage healthy, no background component failed lately", schema_ref("Health")),
            "503": _answer("not ready: `failing` says why", schema_ref("Health")),
        }, public=True)},
        "/metrics": {"get": _op("metrics", "Prometheus metrics", "operations", {
            "200": {"description": "the Prometheus text format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
        })},
        "/v1/openapi.json": {"get": _op("openapi", "This document", "operations", {
            "200": _answer("the OpenAPI 3.1 document", {"type": "object"}, msgpack=False),
        } | _errors(QUERY_ONLY))},
        "/v1/members": {"get": _op("listMembers", "Members this node knows", "cluster", {
            "200": _answer("the member rows", schema_ref("Members")),
        })},
        "/v1/cluster": {"get": _op("getCluster", "This node, its members and replication state", "cluster", {
            "200": _answer("the cluster view", schema_ref("ClusterView")),
        } | _errors(QUERY_ONLY))},
        "/v1/cluster/leave": {"post": _op("leaveCluster", "Leave the cluster gracefully", "cluster", {
            "200": _answer("left: the cluster view; the node keeps serving its own reads and writes",
                           schema_ref("LeaveAnswer")),
        } | _errors(QUERY_ONLY, "Unavailable"))},
        "/v1/kv": {"get": _op("listKeys", "List keys in order", "kv", {
            "200": _answer("one page of keys", schema_ref("KeyPage")),
        } | _errors(QUERY_ONLY, "Unavailable"), query=(
            _string_query("prefix", "only keys starting with this"),
            _string_query("after", "only keys after this one (the previous page's `next`)"),
            {"name": "limit", "in": "query", "required": False, "description": "keys a page holds at most",
             "schema": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": LIST_LIMIT_DEFAULT}},
        ))},
        "/v1/kv/{key}": _kv_item(),
        "/v1/batch": {"post": _op("postBatch", "Many typed updates, one group commit", "batch", {
            "200": _answer("a result per update, in order", schema_ref("BatchAnswer")),
        } | _errors(BODY, "Unavailable", *_BODY_ERRORS), params=("w", "timeout_ms"), query=(
            {"name": "items", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true", "false"],
                                                                           "default": "false"},
             "description": "render each result's item (always rendered with an op_id or w > 1)"},
        ), body=schema_ref("BatchRequest"),
            description="A list, not a transaction: each update gets the status its own POST would have had; a "
                        "refused one changes nothing and the others go ahead.")},
        "/v1/batch/get": {"post": _op("postBatchGet", "Read many keys", "batch", {
            "200": _answer("a result per key, in order", schema_ref("BatchAnswer")),
        } | _errors(BODY, "Unavailable", *_BODY_ERRORS), params=("r", "timeout_ms"),
            body=schema_ref("BatchGetRequest"))},
        "/v1/watch": {"get": _op("watch", "Changes to keys: a long poll, or a stream", "watch", {
            "200": {"description": "with `Accept: text/event-stream`, a stream of server-sent events: `change` (`id`: "
                                   "its cursor, `data`: a WatchEvent) and `reset` (`data`: a WatchReset), with "
                                   "keep-alive comments while idle; otherwise one answer, as soon as there are events "
                                   "or a reset, else after `timeout_ms` with none",
                    "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
                    "content": content(schema_ref("WatchPage")) | {EVENT_STREAM: {"schema": {"type": "string"}}}},
        } | _errors(QUERY_ONLY, "Unavailable"), query=(
            _string_query("prefix", "only keys starting with this"),
            {"name": "since", "in": "query", "required": False, "schema": schema_ref("Cursor"),
             "description": "resume after this cursor (an answer's or an event's); one this node cannot resume from "
                            "answers with a reset, a malformed one is 400"},
            {"name": "timeout_ms", "in": "query", "required": False, "description": "how long a long poll waits",
             "schema": {"type": "integer", "minimum": 1, "maximum": WATCH_MAX_TIMEOUT_MS,
                        "default": WATCH_DEFAULT_TIMEOUT_MS}},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": schema_ref("Cursor"),
             "description": "what an EventSource sends on reconnecting: read as `since` when the query has none"},
        ))},
        **openapi_ops.paths(_op, _answer, _errors(QUERY_ONLY)),  # convergence and the dashboard (`server.ops_http`)
        "/v1/debug/partition": {"post": _op("partition", "Cut this node off from members (fault injection)", "debug", {
            "200": _answer("what is blocked now", schema_ref("PartitionAnswer")),
        } | _errors([*BODY, UNKNOWN_PEER], "Unavailable", *_BODY_ERRORS), body=schema_ref("PartitionRequest"),
            description="Only with `--enable-fault-injection` on a cluster member; otherwise the path is 404.",
            extensions={FAULT_INJECTION: True})},
    }


def document() -> dict[str, Any]:
    """The OpenAPI document, a fresh copy each call."""
    return copy.deepcopy({
        "openapi": OPENAPI_VERSION,
        "info": {"title": "rumor", "version": "1", "description": _DESCRIPTION,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "tags": [{"name": "kv"}, {"name": "batch"}, {"name": "watch"}, {"name": "cluster"}, {"name": "operations"},
                 {"name": "debug", "description": "routes that exist only with fault injection on"}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS | openapi_ops.SCHEMAS, "parameters": PARAMETERS, "headers": HEADERS,
            "responses": RESPONSES,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "only when the node runs with --api-token"}},
        },
    })


@cache
def document_json() -> bytes:
    """The document as served: encoded once per process."""
    return json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode()
