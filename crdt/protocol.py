"""The contracts every CRDT type meets, named once so callers (server, tests) can be typed against them.

State-based: ``merge`` is a join (commutative, associative, idempotent) applied in place; mutators only read
state and return a small delta of the same type, applied with ``merge`` (local and remote paths are one path).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from rumor.crdt.causal_context import CausalContext


@runtime_checkable
class CRDT(Protocol):
    """A delta-state CRDT: ``T()`` is bottom; ``merge`` joins in place in O(size of the argument)."""

    TYPE_NAME: ClassVar[str]

    def merge(self, other: Self) -> None: ...

    def copy(self) -> Self: ...

    def value(self) -> Any: ...

    def is_empty(self) -> bool: ...

    def clear(self, context: CausalContext | None = None) -> Self: ...

    def context(self) -> CausalContext: ...

    def delta_since(self, context: CausalContext) -> Self: ...

    def __eq__(self, other: object) -> bool: ...
