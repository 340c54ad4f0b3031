"""Plain values: the msgpack-able data CRDTs carry, and the one deterministic total order over them.

Plain = None, bool, int (any size), float, str, bytes, tuples of plain (hashable: set elements, keys), and,
as register/map values only, lists and str-keyed dicts. Python compares ``1 == 1.0 == True`` and mixed types
not at all, so sorting elements for canonical encodings or sibling lists needs an explicit order: first by a
type tag, then by value (NaN after every other float).
"""

from __future__ import annotations

from typing import Any

from crdt.errors import InvalidOperationError

_NONE, _BOOL, _INT, _FLOAT, _STR, _BYTES, _TUPLE, _LIST, _DICT = range(9)


def order_key(value: Any) -> tuple[Any, ...]:
    """A sort key giving a total order over plain values; raises ``InvalidOperationError`` on non-plain data."""
    t = type(value)
    if t is str:
        return (_STR, value)
    if t is int:
        return (_INT, value)
    if value is None:
        return (_NONE,)
    if t is bool:
        return (_BOOL, value)
    if t is float:
        return (_FLOAT, 1, 0.0) if value != value else (_FLOAT, 0, value)
    if t is bytes:
        return (_BYTES, value)
    if isinstance(value, tuple):  # includes NamedTuples such as HLCTimestamp
        return (_TUPLE, tuple(order_key(v) for v in value))
    if t is list:
        return (_LIST, tuple(order_key(v) for v in value))
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise InvalidOperationError(f"dict keys must be str, got {type(k).__name__}")
        return (_DICT, tuple((k, order_key(value[k])) for k in sorted(value)))
    raise InvalidOperationError(f"not a plain value: {type(value).__name__}")


def is_hashable_plain(value: Any) -> bool:
    """True for plain values allowed as set elements and map keys (no lists/dicts anywhere inside)."""
    t = type(value)
    if value is None or t in (bool, int, float, str, bytes):
        return True
    if t is tuple:
        return all(is_hashable_plain(v) for v in value)
    return False


def sorted_plain(values: Any) -> list[Any]:
    """``values`` sorted by ``order_key``."""
    return sorted(values, key=order_key)
