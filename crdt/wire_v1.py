"""Wire format version 1: what rumor wrote before version 2 (``crdt.wire_v2``). Still decoded, so data directories
and peers of the previous version keep working; still encodable, so tests can play such a peer.

Layout (lists, one msgpack value): ``[1, type_name, body]``; a dot-kernel body is
``[context, [[replica, [[counter, key, payload], ...]], ...]]``, followed by ``[[context, keys or nil], ...]`` (its
deferred removes, sorted by their bytes, keys sorted likewise) only when it has any; a context is
``[[[replica, n], ...], [[replica, [counter, ...]], ...]]``; an op is ``[1, "op", replica, counter, deps, type_name,
body]``. Payloads and keys are plain values (``crdt.wire_values``), an LWW payload the tuple ``(timestamp, replica,
value)``. Decoding validates every field and invariant, then re-encodes the result and demands identical bytes,
which rejects every non-canonical form with one rule.
"""

from __future__ import annotations

from typing import Any

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.causal_delivery import Op
from rumor.crdt.dot import Dot
from rumor.crdt.dot_kernel import Deferred, DotKernel, context_identity
from rumor.crdt.entries import payload_at, with_entry
from rumor.crdt.errors import CRDTError, DecodeError
from rumor.crdt.version_vector import VersionVector
from rumor.crdt.wire_values import AS_IS as _AS_IS
from rumor.crdt.wire_values import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    EXT_TUPLE,
    _ext,
    type_for,
    value_from_wire,
    value_to_wire,
)
from rumor.crdt.wire_values import MAX_INT as _MAX_INT
from rumor.crdt.wire_values import MIN_INT as _MIN_INT
from rumor.crdt.wire_values import WIRE_SCALARS as _WIRE_SCALARS
from rumor.crdt.wire_values import pack as _pack
from rumor.crdt.wire_values import unpack as _unpack

VERSION = 1


# -- contexts -----------------------------------------------------------------------------------------------
def context_to_wire(ctx: CausalContext) -> list[Any]:
    vv, cloud = ctx._vv, ctx._cloud
    # what most states and deltas on the write path carry: one replica's counter, or the few dots of one replica
    if not cloud:
        if len(vv) == 1:
            for r, n in vv.items():
                return [[[r, n]], []]
    elif not vv and len(cloud) == 1:
        for r, cs in cloud.items():
            return [[], [[r, sorted(cs)]]]
    return [
        [[r, n] for r, n in sorted(vv.items())],
        [[r, sorted(cs)] for r, cs in sorted(cloud.items())],
    ]


def _is_counter(x: object) -> bool:
    return type(x) is int and x >= 1


def context_from_wire(obj: Any) -> CausalContext:
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not list or type(obj[1]) is not list:
        raise DecodeError("context must be [vector, cloud]")
    ctx = CausalContext()
    for entry in obj[0]:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or not _is_counter(entry[1]):
            raise DecodeError("context vector entries must be [replica, counter>=1]")
        ctx._vv[entry[0]] = entry[1]
    for entry in obj[1]:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or type(entry[1]) is not list:
            raise DecodeError("context cloud entries must be [replica, [counter, ...]]")
        for c in entry[1]:
            if not _is_counter(c):
                raise DecodeError("cloud counters must be ints >= 1")
            ctx.add((entry[0], c))
    return ctx


# -- states -------------------------------------------------------------------------------------------------
def _lww_payload_to_wire(payload: Any) -> Any:
    """``value_to_wire`` of an LWW ``(timestamp, replica, value)`` payload, same bytes, without the generic walk:
    every register and map write encodes one, for the delta, the durable log and the digest."""
    ts, replica, value = payload
    wall, logical = ts
    if type(wall) is not int or type(logical) is not int or not (0 <= wall <= _MAX_INT and 0 <= logical <= _MAX_INT) \
            or type(replica) is not str:
        return value_to_wire(payload)
    t = type(value)
    if not (t in _AS_IS or (t is int and _MIN_INT <= value <= _MAX_INT)):
        value = value_to_wire(value)
    return _ext(EXT_TUPLE, _pack([_ext(EXT_TUPLE, _pack(ts)), replica, value]))


#: per-type payload conversion where a type's payload shape allows a faster one than ``value_to_wire``
_PAYLOAD_TO_WIRE = {"lwwregister": _lww_payload_to_wire, "lwwmap": _lww_payload_to_wire}


def state_to_wire(state: DotKernel[Any]) -> list[Any]:
    """Body of a state: every type is a dot store, so all share one layout."""
    entries: list[Any] = []
    keys = state._keys
    payload_to_wire = _PAYLOAD_TO_WIRE.get(state.TYPE_NAME, value_to_wire)
    for r in sorted(state._dots):
        per = state._dots[r]
        rows: list[list[Any]] = []
        append = rows.append
        for c in sorted(per):
            key = per[c]
            payload = payload_at(keys[key], r, c)
            # inline fast path for the common scalars (what value_to_wire returns unchanged)
            t = type(key)
            if not (t is str or (t is int and _MIN_INT <= key <= _MAX_INT)):
                key = value_to_wire(key)
            if payload is not None and type(payload) is not str:
                payload = payload_to_wire(payload)
            append([c, key, payload])
        entries.append([r, rows])
    if state._deferred:
        return [context_to_wire(state._ctx), entries, _deferred_to_wire(state)]
    return [context_to_wire(state._ctx), entries]


def _deferred_to_wire(state: DotKernel[Any]) -> list[Any]:
    rows = []
    for ctx, keys in state._deferred.values():
        wire_keys = None if keys is None else sorted((value_to_wire(k) for k in keys), key=_pack)
        rows.append([context_to_wire(ctx), wire_keys])
    return sorted(rows, key=_pack)


def _deferred_from_wire(cls: type[DotKernel[Any]], state: DotKernel[Any], rows: Any, depth: int, max_depth: int) \
        -> None:
    if type(rows) is not list or not rows:
        raise DecodeError("deferred removes must be a non-empty list (absent when there are none)")
    deferred: dict[tuple[Any, ...], Deferred[Any]] = {}
    for row in rows:
        if type(row) is not list or len(row) != 2 or not (row[1] is None or type(row[1]) is list):
            raise DecodeError("a deferred remove must be [context, keys or nil]")
        ctx = context_from_wire(row[0])
        keys = None
        if row[1] is not None:
            try:
                keys = frozenset(cls._key_from_wire(value_from_wire(k, depth + 1, max_depth)) for k in row[1])
            except (TypeError, ValueError) as exc:
                raise DecodeError(f"invalid key in a deferred remove: {exc}") from exc
        deferred[context_identity(ctx)] = (ctx, keys)
    state._deferred = deferred


def state_from_wire(cls: type[DotKernel[Any]], body: Any, depth: int, max_depth: int) -> DotKernel[Any]:
    """Build a ``cls`` from its wire body, validating every invariant; raises ``DecodeError``."""
    if type(body) is not list or len(body) not in (2, 3) or type(body[1]) is not list:
        raise DecodeError(f"{cls.TYPE_NAME} body must be [context, entries] or [context, entries, deferred]")
    state = cls()
    ctx = state._ctx = context_from_wire(body[0])
    check_entry = cls._entry_from_wire
    insert = state._insert
    inline_insert = cls._insert is DotKernel._insert  # ORMap keeps an index in its own _insert hook
    dots, keys = state._dots, state._keys
    scalars = _WIRE_SCALARS
    for group in body[1]:
        if type(group) is not list or len(group) != 2 or type(group[0]) is not str or type(group[1]) is not list:
            raise DecodeError("entry groups must be [replica, rows]")
        r = group[0]
        top = ctx._vv.get(r, 0)
        cloud = ctx._cloud.get(r, ())
        per: dict[int, Any] = {}
        for row in group[1]:
            if type(row) is not list or len(row) != 3:
                raise DecodeError("entries must be [counter>=1, key, payload]")
            c, key, payload = row
            if type(c) is not int or c < 1:
                raise DecodeError("entries must be [counter>=1, key, payload]")
            if c > top and c not in cloud:
                raise DecodeError(f"entry dot {(r, c)} is not covered by the context")
            if type(key) not in scalars:
                key = value_from_wire(key, depth + 1, max_depth)
            if type(payload) not in scalars:
                payload = value_from_wire(payload, depth + 1, max_depth)
            try:
                key, payload = check_entry(r, key, payload)
                hash(key)
            except (CRDTError, TypeError, ValueError) as exc:
                raise DecodeError(f"invalid {cls.TYPE_NAME} entry at {(r, c)}: {exc}") from exc
            if not inline_insert:
                insert((r, c), key, payload)
                continue
            per[c] = key  # DotKernel._insert, inlined: this loop runs once per element of a big state
            kd = keys.get(key)
            keys[key] = (r, c, payload) if kd is None else with_entry(kd, r, c, payload)
        if per:
            if r in dots:  # a replica listed twice: non-canonical, the re-encode check rejects it
                dots[r].update(per)
            else:
                dots[r] = per
    if len(body) == 3:
        _deferred_from_wire(cls, state, body[2], depth, max_depth)
    return state


def encode(state: DotKernel[Any]) -> bytes:
    """Deterministic bytes for ``state`` (a registered CRDT type)."""
    return _pack([VERSION, state.TYPE_NAME, state_to_wire(state)])


def _envelope(data: bytes, max_bytes: int, kind: str | None) -> list[Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    obj = _unpack(bytes(data), max_bytes)
    if type(obj) is not list or len(obj) < 3 or obj[0] != VERSION or type(obj[0]) is not int:
        raise DecodeError("not a version-1 rumor CRDT envelope")
    if kind is not None and obj[1] != kind:
        raise DecodeError(f"expected a {kind!r} envelope, got {obj[1]!r}")
    return obj


def _canonical(result: Any, data: bytes, again: bytes) -> Any:
    if again != bytes(data):
        raise DecodeError("non-canonical encoding (unsorted, duplicated or non-minimal fields)")
    return result


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Rebuild a state from ``encode`` output; raises only ``DecodeError`` on bad input."""
    obj = _envelope(data, max_bytes, None)
    if len(obj) != 3:
        raise DecodeError("state envelope must be [version, type, body]")
    state = state_from_wire(type_for(obj[1]), obj[2], 1, max_depth)
    try:
        again = encode(state)
    except CRDTError as exc:
        raise DecodeError(f"decoded state does not re-encode: {exc}") from exc
    return _canonical(state, data, again)


def encode_context(ctx: CausalContext) -> bytes:
    return _pack([VERSION, "ctx", context_to_wire(ctx)])


def decode_context(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> CausalContext:
    obj = _envelope(data, max_bytes, "ctx")
    if len(obj) != 3:
        raise DecodeError("context envelope must be [version, 'ctx', context]")
    ctx = context_from_wire(obj[2])
    return _canonical(ctx, data, encode_context(ctx))


def encode_op(op: Op) -> bytes:
    deps = [[r, n] for r, n in op.deps.items()]
    return _pack([VERSION, "op", op.dot.replica, op.dot.counter, deps, op.type_name, state_to_wire(op.delta)])


def decode_op(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Op:
    obj = _envelope(data, max_bytes, "op")
    if len(obj) != 7 or type(obj[2]) is not str or not _is_counter(obj[3]) or type(obj[4]) is not list:
        raise DecodeError("op envelope must be [version, 'op', replica, counter, deps, type, body]")
    deps = VersionVector()
    for entry in obj[4]:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str or not _is_counter(entry[1]):
            raise DecodeError("op deps must be [replica, counter>=1] pairs")
        deps._v[entry[0]] = entry[1]
    cls = type_for(obj[5])
    delta = state_from_wire(cls, obj[6], 1, max_depth)
    op = Op(Dot(obj[2], obj[3]), deps, obj[5], delta)
    try:
        again = encode_op(op)
    except CRDTError as exc:
        raise DecodeError(f"decoded op does not re-encode: {exc}") from exc
    return _canonical(op, data, again)
