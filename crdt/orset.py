"""Add-wins observed-remove set without tombstones: ``DotMap<element, DotSet>`` plus a causal context.

An add tags the element with a fresh dot (and absorbs the element's older dots, so each element normally
carries one dot); a remove ships only a context naming the dots it observed. A concurrent add has a dot the
remove never saw, so it survives (add wins). Removed elements leave nothing behind but their dots in the
causal context, which compacts into one counter per replica: the state never grows with removals.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from itertools import chain
from operator import attrgetter
from typing import Any, ClassVar

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.plain_value import StrictKey, element_key, element_of, is_hashable_plain, order_key
from rumor.crdt.registry import register_type

_identity = attrgetter("_identity")


@register_type
class ORSet(DotKernel[Hashable]):
    """Add-wins set of hashable plain values. Mutators return deltas; apply them with ``merge``."""

    __slots__ = ()

    TYPE_NAME: ClassVar[str] = "orset"

    def add(self, replica: str, element: Hashable) -> ORSet:
        """Delta adding ``element`` with a fresh dot (absorbing the element's observed dots)."""
        t = type(element)
        return self._write_delta(replica, element if t is str or t is int else StrictKey(element), None)

    def add_all(self, replica: str, elements: Iterable[Hashable]) -> ORSet:
        """One delta adding every element, each with its own consecutive dot from ``replica``."""
        unique = dict.fromkeys(map(element_key, elements))
        if len(unique) == 1:  # the commonest: one element, through the one-write path (the same delta)
            for element in unique:
                return self._write_delta(replica, element, None)
        return self._write_many_delta(replica, ((element, None) for element in unique))

    def remove(self, element: Hashable, context: CausalContext | None = None) -> ORSet:
        """Remove the observed dots of ``element`` (only those in ``context`` when given)."""
        return self._remove_delta((element_key(element),), context)

    def remove_all(self, elements: Iterable[Hashable], context: CausalContext | None = None) -> ORSet:
        return self._remove_delta(map(element_key, elements), context)

    def contains(self, element: Hashable) -> bool:
        return element_key(element) in self._keys

    __contains__ = contains

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(map(element_of, self._keys)))

    def value(self) -> frozenset[Hashable]:
        """The elements as a frozenset, identical on every replica holding the same state.

        A frozenset keeps one of the elements Python deems equal (``1``, ``1.0``, ``True``; ``0.0``, ``-0.0``):
        the ``str``/``int`` one if present, else the first in plain-value order. ``elements()`` lists them all.
        """
        strict = [k for k in self._keys if type(k) is StrictKey]
        if not strict:
            return frozenset(self._keys)
        strict.sort(key=_identity)
        plain = (k for k in self._keys if type(k) is not StrictKey)
        return frozenset(chain(plain, (k.value for k in strict)))

    def elements(self) -> list[Hashable]:
        """Every element, types preserved, in the deterministic plain-value order."""
        return sorted(map(element_of, self._keys), key=order_key)

    @classmethod
    def _key_from_wire(cls, key: Any) -> Hashable:
        if not is_hashable_plain(key):
            raise ValueError("set element must be a hashable plain value")
        return element_key(key)

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[Hashable, Any]:
        t = type(key)
        if (t is str or t is int) and payload is None:  # the common case, already a valid key
            return key, None
        if not is_hashable_plain(key):
            raise ValueError("set element must be a hashable plain value")
        if payload is not None:
            raise ValueError("set entries carry no payload")
        return element_key(key), None
