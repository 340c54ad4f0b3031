"""Plain values on the wire, shared by both encoding versions, and the one msgpack packer and unpacker.

msgpack cannot tell a tuple from a list, nor hold an int outside [-2**63, 2**64): those travel as ext types
(``EXT_TUPLE`` holds the packed items, ``EXT_BIGINT`` a sign byte and the big-endian magnitude). Dicts are sent
with their keys sorted. Decoding checks canonical form as it builds (dict keys in order, an ext tuple's bytes
exactly as they would be packed, a big int only where a native int cannot hold it, minimal magnitude), so a
value decodes only from the one byte string that encodes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from rumor.crdt.errors import DecodeError, InvalidOperationError
from rumor.crdt.plain_value import StrictKey
from rumor.crdt.registry import TYPES

if TYPE_CHECKING:
    from rumor.crdt.dot_kernel import DotKernel

EXT_TUPLE = 1
EXT_BIGINT = 2
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
#: what ``value_to_wire`` returns unchanged (plus ints in the native range)
AS_IS = frozenset({type(None), bool, str, bytes, float})
#: what ``value_from_wire`` returns unchanged
WIRE_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 32


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    # ExtType's own __new__ re-validates both fields in Python; ours are always an int code and bytes
    return tuple.__new__(msgpack.ExtType, (code, data))


def _bigint(value: int) -> msgpack.ExtType:
    mag = abs(value)
    return _ext(EXT_BIGINT, (b"-" if value < 0 else b"+") + mag.to_bytes((mag.bit_length() + 7) // 8))


def int_to_wire(value: int) -> Any:
    return value if MIN_INT <= value <= MAX_INT else _bigint(value)


def value_to_wire(value: Any) -> Any:
    """Plain value -> msgpack-ready structure (canonical: dicts sorted, tuples/big ints as ext types).

    Members that are already wire-ready (scalars, small ints) are tested inline rather than by a recursive call:
    this runs for every register and map payload on the write path.
    """
    t = type(value)
    if t in AS_IS:
        return value
    if t is int:
        return value if MIN_INT <= value <= MAX_INT else _bigint(value)
    if t is dict:
        wire = {}
        try:
            keys = sorted(value)
        except TypeError:  # keys of types that do not compare: not all str
            keys = _bad_keys()
        for k in keys:
            if type(k) is not str:
                _bad_keys()
            v = value[k]
            tv = type(v)
            wire[k] = v if tv in AS_IS or (tv is int and MIN_INT <= v <= MAX_INT) else value_to_wire(v)
        return wire
    if t is list or isinstance(value, tuple):
        items = [v if type(v) in AS_IS or (type(v) is int and MIN_INT <= v <= MAX_INT) else value_to_wire(v)
                 for v in value]
        return items if t is list else _ext(EXT_TUPLE, pack(items))
    if t is StrictKey:
        return value_to_wire(value.value)
    raise InvalidOperationError(f"not a plain value: {type(value).__name__}")


def _bad_keys() -> list[str]:
    raise InvalidOperationError("dict keys must be str")


def type_for(name: object) -> type[DotKernel[Any]]:
    if type(name) is not str:
        raise DecodeError("type name must be a string")
    cls = TYPES.get(name)
    if cls is None:
        raise DecodeError(f"unknown CRDT type {name!r}")
    return cls


def value_from_wire(obj: Any, depth: int, max_depth: int) -> Any:
    """Inverse of ``value_to_wire`` for decoded msgpack data, accepting only its canonical form; raises
    ``DecodeError``."""
    if depth > max_depth:
        raise DecodeError(f"nesting deeper than {max_depth}")
    t = type(obj)
    if t in WIRE_SCALARS:
        return obj
    if t is list:
        return [v if type(v) in WIRE_SCALARS else value_from_wire(v, depth + 1, max_depth) for v in obj]
    if t is dict:
        keys = list(obj)
        if not all(type(k) is str for k in keys):
            raise DecodeError("dict keys must be str")
        if keys != sorted(keys):
            raise DecodeError("non-canonical encoding: dict keys out of order")
        return {k: v if type(v) in WIRE_SCALARS else value_from_wire(v, depth + 1, max_depth)
                for k, v in obj.items()}
    if t is msgpack.ExtType:
        data = obj.data
        if obj.code == EXT_TUPLE:
            items = unpack(data, len(data))
            if type(items) is not list:
                raise DecodeError("tuple ext must hold an array")
            if pack(items) != data:
                raise DecodeError("non-canonical encoding inside a tuple")
            return tuple(value_from_wire(v, depth + 1, max_depth) for v in items)
        if obj.code == EXT_BIGINT:
            if len(data) < 2 or data[:1] not in (b"+", b"-") or data[1] == 0:
                raise DecodeError("malformed big int")
            mag = int.from_bytes(data[1:])
            value = -mag if data[:1] == b"-" else mag
            if MIN_INT <= value <= MAX_INT:
                raise DecodeError("non-canonical encoding: a big int that fits a native one")
            return value
    raise DecodeError(f"unexpected wire value of type {t.__name__}")


_PACKER = msgpack.Packer(use_bin_type=True)


def pack(obj: Any) -> bytes:
    """msgpack bytes of ``obj``, through one shared Packer (``packb`` builds a new one per call: twice the cost).

    Sharing is safe: ``Packer.pack`` runs start to end in C without releasing the GIL or calling back into Python
    (no ``default`` hook), so no other call can interleave with it, from this thread or another; nested values are
    packed bottom-up, before the outer call begins.
    """
    return _PACKER.pack(obj)


def unpack(data: bytes, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise DecodeError(f"input of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises a zoo of ValueError/TypeError/StackError subclasses
        raise DecodeError(f"malformed msgpack: {exc}") from exc
