"""Every CRDT type by its wire name (``TYPE_NAME``): the one table that decoding and ORMap's nesting look types up in.

Each type module registers its class where it defines it (``@register_type``), and ``crdt/__init__.py`` imports
every type module; importing any ``crdt`` module runs that first, so the table is complete before anything can
encode, decode or nest. The registry itself imports no type: that is what lets ORMap, a registered type, look up the
types it embeds (itself included) without an import circle. Names are part of the wire format: never reuse one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.errors import InvalidOperationError

D = TypeVar("D", bound=DotKernel[Any])

_TYPES: dict[str, type[DotKernel[Any]]] = {}
TYPES: Mapping[str, type[DotKernel[Any]]] = MappingProxyType(_TYPES)


def register_type(cls: type[D]) -> type[D]:
    """Add a dot-store CRDT class under its ``TYPE_NAME`` (a class decorator); a name names one class only."""
    if not (isinstance(cls, type) and issubclass(cls, DotKernel)) or cls is DotKernel:
        raise InvalidOperationError(f"{cls!r} is not a CRDT type (a DotKernel subclass)")
    name = cls.__dict__.get("TYPE_NAME")
    if not isinstance(name, str):
        raise InvalidOperationError(f"{cls.__name__} defines no TYPE_NAME of its own")
    held = _TYPES.setdefault(name, cls)
    if held is not cls:
        raise InvalidOperationError(f"TYPE_NAME {name!r} already names {held.__qualname__}")
    return cls
