"""Batches: many typed updates, or many reads, in one request (`POST /v1/batch`, `POST /v1/batch/get`).

A batch is a list, not a transaction: the store is available-first, so each update succeeds or fails on its own
(like Elasticsearch's bulk API) and a failed one changes nothing. What the batch buys is cost: one request, one
parse, and one group commit for all of its updates (`Node.update_batch`).

Shapes. Updates: `{"updates": [{"key": "k1", "type": "counter", "increment": 1, "op_id": "..."}, ...]}`, each entry a
`POST /v1/kv/{key}` body plus its `key` and an optional `op_id` (what the `Idempotency-Key` header carries for a
single request). Reads: `{"keys": ["k1", "k2", ...]}`. The answer is `{"results": [...], "errors": bool}`, one
result per entry in order, each with the entry's `key` and the `status` a single request would have had: 200 with
its `item`, 202 with `item`, `acks` and `required`, 204, 404, or an error status with `error: {code, message}`.
`errors` says whether any result is an error, so a client can skip the walk when none is.
"""

from __future__ import annotations

from typing import Any

from rumor.server.errors import MalformedBodyError, ServerError, UnknownFieldError
from rumor.server.http_errors import status_for
from rumor.server.node import Outcome, WriteResult
from rumor.server.updates import Update, parse_update
from rumor.server.values import check_key, check_op_id

#: entries one batch may hold: a batch is bounded work for one request (and the body limit bounds its bytes)
MAX_BATCH = 1000

Entry = tuple[str, Update, str | None]


def _entries(body: Any, field: str) -> list[Any]:
    if not isinstance(body, dict) or field not in body:
        raise MalformedBodyError(f'the body must be an object like {{"{field}": [...]}}')
    unknown = set(body) - {field}
    if unknown:
        raise UnknownFieldError(sorted(unknown))
    entries = body[field]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BATCH:
        raise MalformedBodyError(f"{field!r} must be a list of 1 to {MAX_BATCH} entries")
    return entries


def _entry_key(raw: Any) -> str:
    if not isinstance(raw, str):
        raise MalformedBodyError("each entry needs a 'key' (a string)")
    return check_key(raw)


def parse_updates(body: Any) -> list[Entry | tuple[str, ServerError]]:
    """Each entry as ``(key, update, op_id)``, or ``(key as given, its error)`` when it is invalid on its own (the
    batch itself malformed raises)."""
    out: list[Entry | tuple[str, ServerError]] = []
    for raw in _entries(body, "updates"):
        named = raw.get("key") if isinstance(raw, dict) else None
        try:
            if not isinstance(raw, dict):
                raise MalformedBodyError("each update must be an object: a POST body plus its 'key'")
            key = _entry_key(named)
            op_id = raw.get("op_id")
            out.append((key, parse_update({k: v for k, v in raw.items() if k not in ("key", "op_id")}),
                        None if op_id is None else check_op_id(op_id)))
        except ServerError as exc:
            out.append((named if isinstance(named, str) else "", exc))
    return out


def parse_keys(body: Any) -> list[str | tuple[str, ServerError]]:
    """Each key, checked, or ``(key as given, its error)``."""
    out: list[str | tuple[str, ServerError]] = []
    for raw in _entries(body, "keys"):
        try:
            out.append(_entry_key(raw))
        except ServerError as exc:
            out.append((raw if isinstance(raw, str) else "", exc))
    return out


def error_result(key: str, exc: ServerError) -> dict[str, Any]:
    return {"key": key, "status": status_for(exc), "error": {"code": exc.code, "message": str(exc)}}


def outcome_result(key: str, outcome: Outcome) -> dict[str, Any]:
    """A write's or read's result as its single request would have answered it (status and body)."""
    if isinstance(outcome, WriteResult) and outcome.item is None and outcome.present:
        result: dict[str, Any] = {"key": key, "status": 200}  # applied, not rendered: a batch without items
    elif outcome.item is None:
        if isinstance(outcome, WriteResult):
            result = {"key": key, "status": 204}
        else:
            result = {"key": key, "status": 404, "error": {"code": "not_found", "message": f"no key {key!r}"}}
    elif outcome.satisfied:
        result = {"key": key, "status": 200, "item": outcome.item.to_json()}
    else:
        result = {"key": key, "status": 202, "item": outcome.item.to_json()}
    if not outcome.satisfied:
        result |= {"acks": outcome.acks, "required": outcome.required}
    if isinstance(outcome, WriteResult) and outcome.replayed:
        result["replayed"] = True
    return result


def answer(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"results": results, "errors": any(r["status"] >= 400 and r["status"] != 404 for r in results)}
