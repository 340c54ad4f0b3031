"""The reusable parts of the OpenAPI contract (`server.openapi`): body schemas, parameters, headers, error answers.

Built from the definitions the server checks against (`server.values`, `server.consistency`, `server.batch`,
`server.errors`), so a limit or an error code changed there changes the contract too. Request schemas are closed
(`additionalProperties: false`) because the server refuses unknown fields; response schemas are open, so a field added
to an answer is not a breaking change for clients.
"""

from __future__ import annotations

from typing import Any

from rumor.server.batch import MAX_BATCH
from rumor.server.consistency import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, Level
from rumor.server.errors import (
    BadContextError,
    InvalidKeyError,
    InvalidOperationError,
    InvalidOptionError,
    InvalidValueError,
    KeyNotFoundError,
    MalformedBodyError,
    NodeNotRunningError,
    OpIdConflictError,
    PayloadTooLargeError,
    ServerError,
    StorageCorruptError,
    StorageError,
    TypeConflictError,
    UnauthorizedError,
    UnknownFieldError,
    UnsupportedMediaTypeError,
)
from rumor.server.values import INT64_MAX, INT64_MIN, MAX_KEY_BYTES, MAX_OP_ID_CHARS, TYPES
from rumor.server.watch import ORIGINS

Schema = dict[str, Any]

JSON = "application/json"
MSGPACK = "application/msgpack"
#: `server.cluster.UnknownPeerError.code`, named here so the single-node app never imports the gossip stack
UNKNOWN_PEER = "unknown_peer"
#: the code `server.http_errors` gives aiohttp's 405 (a method the path does not take)
METHOD_NOT_ALLOWED = "method_not_allowed"


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> Schema:
    return ref("schemas", name)


def content(schema: Schema, *, msgpack: bool = True) -> dict[str, Any]:
    """A body in JSON, and in msgpack too when the route negotiates it (`Content-Type` / `Accept`)."""
    media = {JSON: {"schema": schema}}
    if msgpack:
        media[MSGPACK] = {"schema": schema}
    return media


def codes(*errors: type[ServerError] | str) -> list[str]:
    return [e if isinstance(e, str) else e.code for e in errors]


def error_answer(description: str, error_codes: list[str], headers: dict[str, Any] | None = None) -> Schema:
    """An error response: always JSON, `{"error": {"code", "message"}}`, `code` one of `error_codes`."""
    body = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string", "enum": error_codes}, "message": {"type": "string"}},
        }},
    }
    answer: Schema = {"description": description, "content": content(body, msgpack=False)}
    if headers:
        answer["headers"] = headers
    return answer


# -- request shapes ----------------------------------------------------------------------------------------------------

#: a read context's text: base64url without padding (`server.values.encode_read_context`)
_BASE64URL = "^[A-Za-z0-9_-]+$"
_CONTEXT = {"type": "string", "pattern": _BASE64URL,
            "description": "the opaque `context` of an earlier read of this key: a remove or overwrite then acts only "
                           "on what that read saw"}


def _non_empty(*fields: str) -> list[Schema]:
    return [{"required": [f], "properties": {f: {"minItems": 1} if f != "set" else {"minProperties": 1}}}
            for f in fields]


def update_variants(extra: dict[str, Schema] | None = None, required: tuple[str, ...] = ()) -> list[Schema]:
    """The typed updates of `server.updates.parse_update`, one closed schema each, plus `extra` fields (a batch
    entry's `key` and `op_id`)."""
    extra = extra or {}

    def variant(name: str, fields: dict[str, Schema], needs: list[str], **more: Any) -> Schema:
        return {"type": "object", "title": f"{name} update",
                "properties": {"type": {"const": name}, **fields, "context": _CONTEXT, **extra},
                "required": ["type", *needs, *required], "additionalProperties": False, **more}

    elements = {"type": "array", "items": {}, "description": "JSON values; integers within signed 64 bits"}
    return [
        variant("counter", {"increment": {"type": "integer", "not": {"const": 0},
                                          "description": "any non-zero integer; negative decrements"}}, ["increment"]),
        variant("set", {"add": elements, "remove": elements}, [], anyOf=_non_empty("add", "remove"),
                description="removes then adds; an element may not be both added and removed"),
        variant("map", {"set": {"type": "object", "additionalProperties": {}, "description": "field -> JSON value"},
                        "remove": {"type": "array", "items": {"type": "string"}}}, [],
                anyOf=_non_empty("set", "remove"), description="a field may not be both set and removed"),
        variant("register", {"value": {"description": "any JSON value (last writer wins)"}}, ["value"]),
        variant("mvregister", {"value": {"description": "any JSON value (concurrent writes all kept)"}}, ["value"]),
    ]


def _batch_of(field: str, items: Schema, description: str) -> Schema:
    return {"type": "object", "required": [field], "additionalProperties": False, "description": description,
            "properties": {field: {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": items}}}


# -- response shapes ---------------------------------------------------------------------------------------------------

_ACKS = {
    "acks": {"type": "integer", "minimum": 0, "description": "replicas (this node included) that took part in time"},
    "required": {"type": "integer", "minimum": 1, "description": "replicas the consistency level asked for"},
}
_TYPE_NAME = {"type": "string", "enum": sorted(TYPES)}
_ERROR_DETAIL = {"type": "object", "required": ["code", "message"],
                 "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
_MEMBER = {
    "type": "object", "required": ["id", "status"],
    "description": "one member: `gossip_addr`, `http_addr`, `incarnation` and `self` when the node is a cluster member",
    "properties": {
        "id": {"type": "string"},
        "address": {"type": "string", "description": "the gossip address (`host:port`)"},
        "gossip_addr": {"type": "string"},
        "http_addr": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": ["alive", "suspect", "dead", "left"]},
        "incarnation": {"type": "integer", "minimum": 0},
        "self": {"type": "boolean"},
    },
}
_CLUSTER_VIEW = {
    "type": "object",
    "description": "this node, every member it knows, and (on a cluster member) its replication state",
    "properties": {
        "node": {"oneOf": [schema_ref("Member"), {"type": "null"}]},
        "members": {"type": "array", "items": schema_ref("Member")},
        "left": {"type": "boolean"},
        "partitioned_from": {"type": ["array", "null"], "items": {"type": "string"},
                             "description": "what fault injection blocks (null: fault injection is off)"},
        "cluster_size": {"type": "integer", "minimum": 1},
        "node_id": {"type": "string"},
        "epoch": {"type": "integer"},
        "vector": {"type": "object", "additionalProperties": {"type": "integer"}},
        "gc": {"type": "object"},
        "dissemination": {"type": "object"},
        "anti_entropy": {"type": "object"},
        "rejected": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
#: `server.watch.Cursor`'s text (a test holds the two equal)
CURSOR_PATTERN = r"^v1\.([0-9a-f]{16})\.(0|[1-9][0-9]{0,18})\.([A-Za-z0-9._~%-]{1,1600})$"
_WATCH_EVENT = {
    "type": "object", "required": ["key", "type", "value", "context", "cursor", "origin", "deleted"],
    "properties": {
        "key": {"type": "string"}, "type": _TYPE_NAME,
        "value": {"description": "the key's value now, as a read shows it (null when deleted)"},
        "context": {"type": ["string", "null"]},
        "cursor": {"type": "string", "description": "resume after this event: pass it as `since`"},
        "origin": {"type": "string", "enum": list(ORIGINS),
                   "description": "made on this node, received from a peer, or recovered from the log at a restart"},
        "deleted": {"type": "boolean"},
    },
}
_WATCH_RESET = {
    "type": "object", "required": ["reason", "cursor", "resync"],
    "description": "the feed cannot go on from where it was (`reason`: another node's cursor, too old, a slow "
                   "consumer, ...): resync as `resync` says, then watch from `cursor`",
    "properties": {"reason": {"type": "string"}, "cursor": {"type": "string"}, "resync": {"type": "string"}},
}

SCHEMAS: dict[str, Schema] = {
    "Item": {
        "type": "object", "required": ["key", "type", "value", "context"],
        "properties": {"key": {"type": "string"}, "type": _TYPE_NAME,
                       "value": {"description": "as the type reads: counter integer, set sorted list, map object, "
                                                "register value, mvregister list of siblings"},
                       "context": {"type": "string", "pattern": _BASE64URL,
                                   "description": "opaque (base64url); hand it back to act on what this read saw"}},
    },
    "ItemWithAcks": {
        "description": "202: fewer replicas than asked for answered in time; the item is what this node has",
        "allOf": [schema_ref("Item"), {"type": "object", "required": ["acks", "required"], "properties": _ACKS}],
    },
    "Update": {"oneOf": update_variants(), "description": "a typed update (`POST /v1/kv/{key}`)"},
    "DeleteBody": {"type": "object", "additionalProperties": False, "properties": {"context": _CONTEXT},
                   "description": "the context may come here instead of in the query (not in both)"},
    "BatchRequest": _batch_of(
        "updates", {"oneOf": update_variants({"key": schema_ref("Key"), "op_id": schema_ref("OpId")}, ("key",))},
        "typed updates, each with its `key` and an optional `op_id` (what `Idempotency-Key` is for one request)"),
    "BatchGetRequest": _batch_of("keys", schema_ref("Key"), "keys to read"),
    "BatchAnswer": {
        "type": "object", "required": ["results", "errors"],
        "properties": {
            "results": {"type": "array", "items": {
                "type": "object", "required": ["key", "status"],
                "description": "one per entry, in order, with the status its own request would have had",
                "properties": {"key": {"type": "string"},
                               "status": {"type": "integer", "enum": [200, 202, 204, 400, 404, 409, 422]},
                               "item": schema_ref("Item"), "error": _ERROR_DETAIL,
                               "replayed": {"type": "boolean"}, **_ACKS},
            }},
            "errors": {"type": "boolean", "description": "whether any result is an error (404 is not one)"},
        },
    },
    "KeyPage": {
        "type": "object", "required": ["keys", "next"],
        "properties": {
            "keys": {"type": "array", "items": {"type": "object", "required": ["key", "type"],
                                                "properties": {"key": {"type": "string"}, "type": _TYPE_NAME}}},
            "next": {"type": ["string", "null"], "description": "pass as `after` for the next page; null: no more"},
        },
    },
    "Member": _MEMBER,
    "Members": {"type": "object", "required": ["members"],
                "properties": {"members": {"type": "array", "items": schema_ref("Member")}}},
    "ClusterView": {**_CLUSTER_VIEW, "required": ["node", "members", "left", "partitioned_from"]},
    "LeaveAnswer": {**_CLUSTER_VIEW, "required": ["members", "left"]},
    "PartitionRequest": {"type": "object", "required": ["block"], "additionalProperties": False,
                         "properties": {"block": {"type": "array", "items": {"type": "string"},
                                                  "description": "member ids or gossip `host:port`; [] heals"}}},
    "PartitionAnswer": {"type": "object", "required": ["blocked"],
                        "properties": {"blocked": {"type": "array", "items": {"type": "string"}}}},
    "Health": {
        "type": "object", "required": ["status", "node", "ready", "durable"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "node": {"type": ["string", "null"]},
            "ready": {"type": "boolean"},
            "durable": {"type": "boolean"},
            "version": {"type": "string"},
            "failing": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "{component: one-line reason}, only when not ready"},
        },
    },
    "WatchEvent": _WATCH_EVENT,
    "WatchReset": _WATCH_RESET,
    "Cursor": {"type": "string", "pattern": CURSOR_PATTERN,
               "description": "a position in one node's history of changes; opaque (URL-safe)"},
    "WatchPage": {
        "type": "object", "required": ["events", "cursor", "reset"],
        "properties": {"events": {"type": "array", "items": schema_ref("WatchEvent")},
                       "cursor": {"type": "string", "description": "pass as `since` for what follows"},
                       "reset": {"oneOf": [{"type": "null"}, schema_ref("WatchReset")]}},
    },
    "Key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES,
            "description": f"1 to {MAX_KEY_BYTES} bytes of UTF-8"},
    "OpId": {"type": "string", "pattern": f"^[!-~]{{1,{MAX_OP_ID_CHARS}}}$",
             "description": f"1 to {MAX_OP_ID_CHARS} visible ASCII characters, naming one request for good"},
    "JsonValue": {"description": f"any JSON value; strings valid Unicode, integers in {INT64_MIN}..{INT64_MAX}"},
}


# -- parameters, headers, answers shared by many operations -----------------------------------------------------------

def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_LEVELS = [level.value for level in Level]
PARAMETERS: dict[str, Schema] = {
    "key": {"name": "key", "in": "path", "required": True, "schema": schema_ref("Key"),
            "description": f"1 to {MAX_KEY_BYTES} bytes of UTF-8 once percent-decoded (strictly: `%` takes two hex "
                           "digits); `a%2Fb` and `a/b` are the same key"},
    "w": _query("w", {"type": "string", "enum": _LEVELS, "default": "1"},
                "replicas that must hold the write durably before 200: 1, quorum or all"),
    "r": _query("r", {"type": "string", "enum": _LEVELS, "default": "1"},
                "replicas whose states a read merges first: 1, quorum or all"),
    "timeout_ms": _query("timeout_ms", {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS,
                                        "default": DEFAULT_TIMEOUT_MS}, "how long to wait for the replicas (ASCII "
                                                                        "digits)"),
    "context": _query("context", {"type": "string", "pattern": _BASE64URL},
                      "the opaque `context` of an earlier read of this key"),
    "Idempotency-Key": {"name": "Idempotency-Key", "in": "header", "required": False, "schema": schema_ref("OpId"),
                        "description": "an op_id: a retry of the same request returns the first result (with "
                                       "`X-Rumor-Replayed: true`); with another request it is 422"},
}

HEADERS: dict[str, Schema] = {
    "X-Rumor-Replayed": {"description": "the stored result of an earlier request with the same op_id",
                         "schema": {"type": "string", "const": "true"}},
    "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}},
    "Allow": {"required": True, "schema": {"type": "string"}, "description": "the methods the path takes"},
}

RESPONSES: dict[str, Schema] = {
    "Unauthorized": error_answer("the node has an API token and the request did not present it",
                                 codes(UnauthorizedError), {"WWW-Authenticate": ref("headers", "WWW-Authenticate")}),
    "NotFound": error_answer("no such key (or emptied; it keeps its type)", codes(KeyNotFoundError)),
    "MethodNotAllowed": error_answer("the path does not take this method", [METHOD_NOT_ALLOWED],
                                     {"Allow": ref("headers", "Allow")}),
    "TypeMismatch": error_answer("the key holds another type (a key's type is fixed by its first write)",
                                 codes(TypeConflictError)),
    "PayloadTooLarge": error_answer("the body is over `--max-body-bytes`", codes(PayloadTooLargeError)),
    "UnsupportedMediaType": error_answer("bodies are application/json (the default) or application/msgpack",
                                         codes(UnsupportedMediaTypeError)),
    "OpIdConflict": error_answer("the Idempotency-Key already named another request", codes(OpIdConflictError)),
    "Unavailable": error_answer("storage failed (nothing was acknowledged) or the node is not running",
                                codes(StorageError, StorageCorruptError, NodeNotRunningError)),
}

#: the 400 codes of each kind of request
QUERY_ONLY = codes(InvalidOptionError)
KEYED = codes(InvalidKeyError, InvalidOptionError)
BODY = codes(InvalidOptionError, MalformedBodyError, InvalidValueError, UnknownFieldError)
WRITE = codes(InvalidKeyError, InvalidOptionError, MalformedBodyError, InvalidValueError, UnknownFieldError,
              InvalidOperationError, BadContextError)


def bad_request(error_codes: list[str]) -> Schema:
    return error_answer("the request is malformed or names an invalid option; nothing changed", error_codes)
