"""Add-wins observed-remove set without tombstones: ``DotMap<element, DotSet>`` plus a causal context.

An add tags the element with a fresh dot (and absorbs the element's older dots, so each element normally
carries one dot); a remove ships only a context naming the dots it observed. A concurrent add has a dot the
remove never saw, so it survives (add wins). Removed elements leave nothing behind but their dots in the
causal context, which compacts into one counter per replica: the state never grows with removals.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from crdt.causal_context import CausalContext
from crdt.dot_kernel import DotKernel, DotT
from crdt.plain_value import is_hashable_plain


class ORSet(DotKernel):
    """Add-wins set of hashable plain values. Mutators return deltas; apply them with ``merge``."""

    __slots__ = ()

    TYPE_NAME: ClassVar[str] = "orset"

    def add(self, replica: str, element: Hashable) -> ORSet:
        """Delta adding ``element`` with a fresh dot (absorbing the element's observed dots)."""
        return self._write_delta(replica, element, None)

    if not TYPE_CHECKING:  # same behaviour, one call fewer on the hottest path
        add = DotKernel._write_delta

    def add_all(self, replica: str, elements: Iterable[Hashable]) -> ORSet:
        """One delta adding every element, each with its own consecutive dot from ``replica``."""
        n = self._ctx._vv.get(replica, 0)
        entries: list[tuple[DotT, Hashable, None]] = []
        covered: list[DotT] = []
        seen: set[Hashable] = set()
        for element in elements:
            if element in seen:
                continue
            seen.add(element)
            n += 1
            entries.append(((replica, n), element, None))
            kd = self._keys.get(element)
            if kd:
                covered.extend(kd)
        return self._delta(entries, covered)

    def remove(self, element: Hashable, context: CausalContext | None = None) -> ORSet:
        """Remove the observed dots of ``element`` (only those in ``context`` when given)."""
        return self._remove_delta((element,), context)

    def remove_all(self, elements: Iterable[Hashable], context: CausalContext | None = None) -> ORSet:
        return self._remove_delta(elements, context)

    def contains(self, element: Hashable) -> bool:
        return element in self._keys

    __contains__ = contains

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._keys))

    def value(self) -> frozenset[Hashable]:
        return frozenset(self._keys)

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[Hashable, Any]:
        if not is_hashable_plain(key):
            raise ValueError("set element must be a hashable plain value")
        if payload is not None:
            raise ValueError("set entries carry no payload")
        return key, None
