"""Request bodies for the HTTP fuzz suite: valid typed updates, and each with one thing wrong, with the verdict the
API contract gives it (`Expect`).

Valid bodies follow the README's shapes (counter / set / register / mvregister / map, with an optional context).
Mutations: a lone surrogate wherever a string lives (value, set element, removed element, map field name, nested
object key), integers outside 64 bits in values, NaN and infinities as raw text, nesting past the limit, empty updates,
wrong field types and unknown fields, truncated and garbled bytes, invalid msgpack and invalid UTF-8, oversized and
empty bodies. Deep and non-finite values are spliced in as bytes (`substituted`): the encoders refuse to make them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

Draw = Callable[[st.SearchStrategy[Any]], Any]

#: The fuzzed node's body limit: small, so an oversized body is cheap to send.
MAX_BODY_BYTES = 8192
INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Expect:
    """The contract's verdict: "accept", "reject" (optionally an exact status and error code) or "any"."""

    outcome: str
    status: int | None = None
    code: str | None = None
    label: str | None = None  # a finer label where one mutation has several kinds


ANY = Expect("any")
ACCEPT = Expect("accept")


def reject(status: int | None = None, code: str | None = None, *, label: str | None = None) -> Expect:
    return Expect("reject", status, code, label)


def combine(*parts: Expect) -> Expect:
    """A request's verdict from its parts': a rejection wins (exact only when it is the only one)."""
    rejections = [p for p in parts if p.outcome == "reject"]
    if len(rejections) == 1:
        return rejections[0]
    if rejections:
        statuses = {p.status for p in rejections}
        return reject(statuses.pop() if len(statuses) == 1 else None)
    return ANY if any(p.outcome == "any" for p in parts) else ACCEPT


texts = st.text(max_size=12)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(*INT64), texts,
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(texts, inner, max_size=3)),
                           max_leaves=8)
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)


def encode(value: Any, fmt: str, *, ascii_json: bool = True) -> bytes:
    """JSON (with escapes, a lone surrogate goes out as \\ud800; without, as its raw bytes) or msgpack."""
    if fmt == "msgpack":
        return msgpack.packb(value, use_bin_type=True, unicode_errors="surrogatepass")
    return json.dumps(value, ensure_ascii=ascii_json).encode("utf-8", "surrogatepass")


def parses(data: bytes, fmt: str) -> bool:
    try:
        if fmt == "msgpack":
            msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            json.loads(data.decode("utf-8-sig"))
    except (ValueError, TypeError, RecursionError):
        return False
    return bool(data)


def element_id(value: Any) -> tuple[str, str]:
    """Equality as the node sees set elements: 1, 1.0 and true are three different elements."""
    return type(value).__name__, json.dumps(value, sort_keys=True)


def typed_update(draw: Draw, type_name: str, context: str | None, fmt: str = "json") -> dict[str, Any]:
    """A valid, non-empty POST body for `type_name` (a counter takes any non-zero integer, past 64 bits too)."""
    body: dict[str, Any] = {"type": type_name}
    if type_name == "counter":
        wide = st.integers(-(10**30), 10**30) if fmt == "json" else st.integers(*INT64)
        body["increment"] = draw(st.one_of(st.integers(*INT64), wide).filter(bool))
    elif type_name == "set":
        add = draw(st.lists(json_scalars | json_values, max_size=3))
        taken = {element_id(v) for v in add}
        remove = [v for v in draw(st.lists(json_scalars, max_size=2)) if element_id(v) not in taken]
        if not add and not remove:
            add = [draw(texts)]
        body["add"], body["remove"] = add, remove
        for name in ("add", "remove"):  # an empty list beside a non-empty one is still a non-empty update
            if not body[name] and draw(st.booleans()):
                del body[name]
    elif type_name == "map":
        fields = draw(st.dictionaries(texts, json_values, max_size=3))
        removed = [f for f in draw(st.lists(texts, max_size=2)) if f not in fields]
        if not fields and not removed:
            fields = {draw(texts): draw(json_values)}
        if fields or draw(st.booleans()):
            body["set"] = fields
        if removed:
            body["remove"] = removed
    else:
        body["value"] = draw(json_values)
    if context is not None:
        body["context"] = context
    return body


PLACEHOLDER = "@PLACEHOLDER@"


def substituted(body: Any, fmt: str, raw: bytes) -> bytes:
    """`body` encoded, its PLACEHOLDER string replaced by `raw`: an encoded value the encoders would not make (NaN
    as JSON text) or not survive (nesting past their recursion limits)."""
    return encode(body, fmt).replace(encode(PLACEHOLDER, fmt), raw, 1)


def nested(depth: int, kind: str, fmt: str) -> bytes:
    """`depth` lists (or one-field objects) around a 1, as bytes."""
    if fmt == "msgpack":
        return (b"\x91" if kind == "list" else b"\x81\xa1d") * depth + b"\x01"
    return (b"[" if kind == "list" else b'{"d": ') * depth + b"1" + (b"]" if kind == "list" else b"}") * depth


def planted(draw: Draw, poison: Any) -> Any:
    """`poison` in a JSON value: as it is, in a list, or deep in an object."""
    where = draw(st.sampled_from(["bare", "list", "nested"]))
    return poison if where == "bare" else [1, poison] if where == "list" else {"a": {"b": [poison]}}


def surrogate_body(draw: Draw, type_name: str, method: str) -> Any:
    """A body with a lone surrogate where strings live: a value, a set element or removed element, a map field name,
    value or removed field, a nested object's key; for a counter (no strings) the name of an unknown field."""
    lone = draw(SURROGATES)
    text = draw(st.sampled_from([lone, "x" + lone, lone + "y", "ok\U0001f600" + lone]))
    poison = {text: 1} if draw(st.booleans()) else text
    if method == "PUT":
        return planted(draw, poison)
    if type_name == "counter":
        return {"type": "counter", "increment": 1, text: 1}
    if type_name == "set":
        return {"type": "set", draw(st.sampled_from(["add", "remove"])): [planted(draw, poison)]}
    if type_name == "map":
        spot = draw(st.sampled_from(["field", "value", "remove"]))
        if spot == "field":
            return {"type": "map", "set": {text: 1}}
        if spot == "value":
            return {"type": "map", "set": {"f": planted(draw, poison)}}
        return {"type": "map", "set": {"g": 1}, "remove": [text]}
    return {"type": type_name, "value": planted(draw, poison)}


def body_with(draw: Draw, type_name: str, method: str, poison: Any) -> Any:
    """A body whose value (set element, field value; for a counter, the increment) holds `poison`."""
    if method == "PUT":
        return planted(draw, poison)
    if type_name == "counter":
        return {"type": "counter", "increment": [poison]}
    if type_name == "set":
        return {"type": "set", "add": [planted(draw, poison)]}
    if type_name == "map":
        return {"type": "map", "set": {"f": planted(draw, poison)}}
    return {"type": type_name, "value": planted(draw, poison)}


EMPTY_UPDATES = (
    {"type": "set", "add": []}, {"type": "set", "remove": []}, {"type": "set", "add": [], "remove": []},
    {"type": "map", "set": {}}, {"type": "map", "remove": []}, {"type": "map", "set": {}, "remove": []},
)
INVALID_MSGPACK = (b"\xc1", b"\x92\x01", b"\x01\x02", b"\xd9\x05ab", b"\xa3\xed\xa0\x80", b"\x81\x01\x02",
                   b"\xc4\x01a", b"\xd4\x01\x00", b"\xdc\xff\xff", b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00")
_WRONG_MAP_FIELDS = ({"set": []}, {"set": "x"}, {"remove": "f"}, {"remove": [1]}, {"set": None})


def wrong_shape(draw: Draw, type_name: str, fmt: str) -> Any:
    """A POST body that is no update: not an object, a bad type name, an unknown field, a non-string context, a
    missing field, a wrong field type, a zero increment, an element or field both added and removed."""
    choice = draw(st.integers(0, 9))
    base = typed_update(draw, type_name, None, fmt)
    if choice == 0:
        return draw(st.sampled_from([[], 1, "counter", None, [{"type": "counter", "increment": 1}]]))
    if choice == 1:
        return base | {"type": draw(st.sampled_from([5, None, "Counter", "gcounter", "", ["set"]]))}
    if choice == 2:
        return base | {draw(st.sampled_from(["bogus", "Type", "ops", "value2", ""])): 1}
    if choice == 3:
        if draw(st.booleans()):
            return base | {"context": draw(st.sampled_from([5, [], {}, True]))}
        return {"type": type_name}  # no increment / add / remove / set / value at all
    if type_name == "counter":
        return base | {"increment": draw(st.sampled_from([0, -0, "5", 5.0, 1.5, True, None, [], {}]))}
    if type_name == "set":
        if choice < 6:
            element = draw(json_scalars)
            return {"type": "set", "add": [element, "x"], "remove": [element]}
        return base | {draw(st.sampled_from(["add", "remove"])): draw(st.sampled_from(["x", {}, 1, None]))}
    if type_name == "map":
        if choice < 6:
            return {"type": "map", "set": {"f": 1, "g": 2}, "remove": ["f"]}
        return base | draw(st.sampled_from(_WRONG_MAP_FIELDS))
    return {"type": type_name}  # a register write without its value


BODY_MUTATIONS = ("surrogate", "int_range", "nonfinite", "deep", "empty_update", "wrong_shape", "truncated",
                  "garbled", "invalid_msgpack", "non_utf8", "oversized", "empty_body")


def mutated_body(draw: Draw, method: str, type_name: str, fmt: str) -> tuple[bytes, str, Expect]:
    """A PUT or POST body with one thing wrong: (bytes, label, verdict)."""
    mutation = draw(st.sampled_from(BODY_MUTATIONS))
    bad = reject(400)
    if mutation == "surrogate":
        raw = fmt == "json" and draw(st.booleans())  # the surrogate's 3 bytes in the UTF-8 text, not an escape
        return encode(surrogate_body(draw, type_name, method), fmt, ascii_json=not raw), "body_surrogate", bad
    if mutation == "int_range":
        big = draw(st.sampled_from([2**63, 2**64 - 1, -(2**63) - 1, 10**300] if fmt == "json" else [2**63, 2**64 - 1]))
        return encode(body_with(draw, type_name, method, big), fmt), "body_int_range", bad
    if mutation == "nonfinite":
        if fmt == "msgpack":
            return encode(body_with(draw, type_name, method, float("nan")), fmt), "body_nonfinite", bad
        spelled = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        return substituted(body_with(draw, type_name, method, PLACEHOLDER), fmt, spelled), "body_nonfinite", bad
    if mutation == "deep":
        kind = draw(st.sampled_from(["list", "dict"]))  # within the body limit: 2 bytes a level, or 6 ({"d": })
        depth = draw(st.sampled_from([30, 100, 1000, 3000 if kind == "list" else 1100]))
        body = body_with(draw, type_name, method, PLACEHOLDER)
        return substituted(body, fmt, nested(depth, kind, fmt)), "body_deep", bad
    if mutation == "empty_update" and method == "POST":
        return encode(draw(st.sampled_from(EMPTY_UPDATES)), fmt), "body_empty_update", bad
    if mutation == "wrong_shape" and method == "POST":
        return encode(wrong_shape(draw, type_name, fmt), fmt), "body_wrong_shape", bad
    if mutation == "invalid_msgpack" or (fmt == "msgpack" and mutation == "non_utf8"):
        return draw(st.sampled_from(INVALID_MSGPACK)), "body_invalid_msgpack", bad
    if mutation == "non_utf8":
        invalid = draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xc3"]))
        if method == "POST":
            return b'{"type": "' + type_name.encode() + b'", "x": "' + invalid + b'"}', "body_non_utf8", bad
        return b'"' + invalid + b'"', "body_non_utf8", bad
    if mutation == "oversized":
        return encode(1, fmt) + b" " * MAX_BODY_BYTES, "body_oversized", reject(413)
    if mutation == "empty_body":
        return b"", "body_empty", bad
    valid = encode(typed_update(draw, type_name, None, fmt) if method == "POST" else draw(json_values), fmt)
    if mutation == "garbled":  # may still be valid: the invariants only
        data = bytearray(valid)
        for index in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=3)):
            data[index] = draw(st.integers(0, 255))
        return bytes(data), "body_garbled", ANY
    cut = valid[: draw(st.integers(0, len(valid) - 1))]  # a prefix of a number can still be a number
    return cut, "body_truncated", bad if not parses(cut, fmt) else ANY
