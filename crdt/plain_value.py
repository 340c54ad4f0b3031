"""Plain values: the msgpack-able data CRDTs carry, and the one deterministic total order over them.

Plain = None, bool, int (any size), float, str, bytes, tuples of plain (hashable: set elements, keys), and,
as register/map values only, lists and str-keyed dicts. Python compares ``1 == 1.0 == True`` and mixed types
not at all, so sorting elements for canonical encodings or sibling lists needs an explicit order: first by a
type tag, then by value (NaN after every other float).
"""

from __future__ import annotations

from typing import Any

from rumor.crdt.errors import InvalidOperationError

_NONE, _BOOL, _INT, _FLOAT, _STR, _BYTES, _TUPLE, _LIST, _DICT = range(9)


def order_key(value: Any, strict: bool = False) -> tuple[Any, ...]:
    """A sort key giving a total order over plain values; raises ``InvalidOperationError`` on non-plain data.

    ``strict`` makes the key an identity too: floats are told apart by their exact bits (``-0.0`` is not ``0.0``).
    """
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
        if strict:
            return (_FLOAT, value.hex())
        return (_FLOAT, 1, 0.0) if value != value else (_FLOAT, 0, value)
    if t is bytes:
        return (_BYTES, value)
    if isinstance(value, tuple):  # includes NamedTuples such as HLCTimestamp
        return (_TUPLE, tuple(order_key(v, strict) for v in value))
    if t is list:
        return (_LIST, tuple(order_key(v, strict) for v in value))
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise InvalidOperationError(f"dict keys must be str, got {type(k).__name__}")
        return (_DICT, tuple((k, order_key(value[k], strict)) for k in sorted(value)))
    raise InvalidOperationError(f"not a plain value: {type(value).__name__}")


class StrictKey:
    """A set element as a dict key that Python's loose equality cannot merge with another.

    Python has ``1 == 1.0 == True`` (and ``(1,) == (True,)``), so keying elements by themselves would make those one
    element whose surviving type depends on merge order: a broken join. ``str`` and ``int`` elements (the common,
    hot case) are keyed as they are; every other element is wrapped in a StrictKey, whose equality and hash follow
    its type-tagged ``order_key`` (strict). An int never equals a StrictKey, so the two kinds cannot collide.
    """

    __slots__ = ("_identity", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._identity = order_key(value, strict=True)

    def __eq__(self, other: object) -> bool:
        return type(other) is StrictKey and self._identity == other._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    def __repr__(self) -> str:
        return f"StrictKey({self.value!r})"


def element_key(element: Any) -> Any:
    """The dict key a set element is stored under (see ``StrictKey``)."""
    t = type(element)
    return element if t is str or t is int else StrictKey(element)


def element_of(key: Any) -> Any:
    """Inverse of ``element_key``."""
    return key.value if type(key) is StrictKey else key


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
