"""The operator routes' part of the OpenAPI contract (`server.openapi`): the convergence report, the dashboard's
event stream and its static files (`server.ops_http`). Kept here so the shared document grows by two lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rumor.server.ops_http import DEFAULT_INTERVAL_MS, MAX_INTERVAL_MS, MIN_INTERVAL_MS, UI_FILES
from rumor.server.replication.convergence import VERDICTS
from rumor.server.sse import CONTENT_TYPE as EVENT_STREAM

Schema = dict[str, Any]
_SECONDS = {"type": ["number", "null"], "minimum": 0}
_COUNT = {"type": ["integer", "null"], "minimum": 0}

_PEER = {
    "type": "object",
    "required": ["id", "status", "incarnation", "gossip_address", "answered", "root_match", "differing_ranges",
                 "last_exchange_s_ago", "backlog_groups", "backlog_bytes", "lag_s"],
    "properties": {
        "id": {"type": "string"}, "status": {"type": "string", "enum": ["alive", "suspect", "dead"]},
        "incarnation": {"type": "integer", "minimum": 0}, "gossip_address": {"type": "string"},
        "http_address": {"type": ["string", "null"]},
        "answered": {"type": "boolean", "description": "the peer answered this check's probe"},
        "root_match": {"type": ["boolean", "null"],
                       "description": "its root equals ours (from its last answer when it could not be asked now); "
                                      "null: it never answered"},
        "differing_ranges": {**_COUNT, "description": "key ranges (1/64 of the key-hash space each) that differ"},
        "last_exchange_s_ago": {**_SECONDS, "description": "since the last complete anti-entropy session with it"},
        "last_answer_s_ago": _SECONDS,
        "keys": _COUNT, "dirty_keys": {**_COUNT, "description": "its digests not yet rehashed"},
        "backlog_groups": {**_COUNT, "description": "delta groups queued on that peer for pushing"},
        "backlog_bytes": _COUNT,
        "lag_s": {**_SECONDS, "description": "age of the oldest delta group that peer made which this node lacks"},
        "note": {"type": "string", "description": "why it could not be asked, when it could not"},
    },
}
_REPORT = {
    "type": "object", "required": ["node", "verdict", "summary", "keys", "root", "dirty_keys", "peers"],
    "description": "whether this node holds the same data as every member now; `converged` only when every member "
                   "that has not left answered with this node's root and nothing is waiting to be rehashed",
    "properties": {
        "node": {"type": ["string", "null"]}, "verdict": {"type": "string", "enum": list(VERDICTS)},
        "summary": {"type": "string"}, "keys": {"type": "integer", "minimum": 0},
        "root": {"type": ["string", "null"], "description": "this node's Merkle root (hex)"},
        "dirty_keys": _COUNT, "backlog_groups": _COUNT, "backlog_bytes": _COUNT,
        "status": {"type": ["string", "null"]}, "incarnation": _COUNT,
        "gossip_address": {"type": ["string", "null"]}, "http_address": {"type": ["string", "null"]},
        "peers": {"type": "array", "items": {"$ref": "#/components/schemas/PeerConvergence"}},
    },
}
_SNAPSHOT = {
    "type": "object", "required": ["t", "node", "members", "keys", "writes", "writes_per_s", "convergence", "events"],
    "properties": {
        "t": {"type": "number", "description": "unix time of the snapshot"}, "node": {"type": "string"},
        "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
        "keys": {"type": "integer", "minimum": 0},
        "writes": {"type": "integer", "minimum": 0, "description": "local updates counted so far"},
        "writes_per_s": {"type": ["number", "null"], "description": "null in a one-off answer (needs two samples)"},
        "convergence": {"$ref": "#/components/schemas/ConvergenceReport"},
        "events": {"type": "array", "items": {"type": "object", "description": "a membership change this node saw",
                                              "properties": {"t": {"type": "number"}, "member": {"type": "string"},
                                                             "status": {"type": "string"},
                                                             "was": {"type": ["string", "null"]}}}},
    },
}
SCHEMAS: dict[str, Schema] = {"PeerConvergence": _PEER, "ConvergenceReport": _REPORT, "UISnapshot": _SNAPSHOT}

Operation = Callable[..., Schema]
Answer = Callable[..., Schema]


def paths(op: Operation, answer: Answer, query_errors: dict[str, Schema]) -> dict[str, Schema]:
    """The path items, built with `server.openapi`'s own operation and answer helpers."""
    out: dict[str, Schema] = {
        "/v1/cluster/convergence": {"get": op("getConvergence", "Whether every member holds this node's data, now",
                                              "cluster", {
            "200": answer("the convergence report", {"$ref": "#/components/schemas/ConvergenceReport"}),
        } | query_errors, description="Asks every live peer for its Merkle root (a small PROBE) and compares. See "
                                       "README, 'Convergence and the dashboard'.")},
        "/v1/ui/events": {"get": op("uiEvents", "The dashboard's snapshots: a stream, or one", "operations", {
            "200": {"description": "with `Accept: text/event-stream`, an `event: snapshot` every `interval_ms` "
                                   "(`data`: a UISnapshot); otherwise one snapshot",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UISnapshot"}},
                                "application/msgpack": {"schema": {"$ref": "#/components/schemas/UISnapshot"}},
                                EVENT_STREAM: {"schema": {"type": "string"}}}},
        } | query_errors, query=({"name": "interval_ms", "in": "query", "required": False,
                                  "description": "time between two snapshots of a stream",
                                  "schema": {"type": "integer", "minimum": MIN_INTERVAL_MS,
                                             "maximum": MAX_INTERVAL_MS, "default": DEFAULT_INTERVAL_MS}},))},
    }
    for path, (name, media) in UI_FILES.items():
        out[path] = {"get": op(f"ui_{name.replace('.', '_')}", f"The dashboard: {name}", "operations", {
            "200": {"description": "a static file of the dashboard (no data: public)",
                    "content": {media: {"schema": {"type": "string"}}}},
        }, public=True)}
    return out


__all__ = ["SCHEMAS", "paths"]
