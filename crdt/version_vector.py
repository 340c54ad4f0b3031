"""Version vectors: per-replica event counts, compared by the usual causal partial order.

A vector ``{A: 3}`` says "events A:1..A:3 happened". It is the compact half of a causal context and the
``deps`` of an op. Counters of replicas that are absent are 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from enum import Enum

from rumor.crdt.dot import Dot


class Ordering(Enum):
    """Result of comparing two version vectors (Akka's ``Before | After | Same | Concurrent``)."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


class VersionVector:
    """Mutable map replica -> highest contiguous counter; zero entries are never stored."""

    __slots__ = ("_v",)

    def __init__(self, counters: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = counters.items() if isinstance(counters, Mapping) else counters
        self._v: dict[str, int] = {r: n for r, n in items if n > 0}

    @classmethod
    def _wrap(cls, counters: dict[str, int]) -> VersionVector:
        """Adopt ``counters`` without copying (internal: caller hands over ownership)."""
        vv = cls.__new__(cls)
        vv._v = counters
        return vv

    def get(self, replica: str) -> int:
        return self._v.get(replica, 0)

    def contains(self, dot: tuple[str, int]) -> bool:
        return dot[1] <= self._v.get(dot[0], 0)

    __contains__ = contains

    def increment(self, replica: str) -> Dot:
        """Record the next event of ``replica`` and return its dot."""
        n = self._v.get(replica, 0) + 1
        self._v[replica] = n
        return Dot(replica, n)

    def set(self, replica: str, counter: int) -> None:
        """Raise ``replica``'s entry to ``counter`` (never lowers it)."""
        if counter > self._v.get(replica, 0):
            self._v[replica] = counter

    def merge(self, other: VersionVector) -> None:
        """Pointwise max, in place."""
        mine = self._v
        for r, n in other._v.items():
            if n > mine.get(r, 0):
                mine[r] = n

    def covers(self, other: VersionVector) -> bool:
        """True when every event in ``other`` is in ``self``."""
        mine = self._v
        return all(n <= mine.get(r, 0) for r, n in other._v.items())

    def compare(self, other: VersionVector) -> Ordering:
        ge = self.covers(other)
        le = other.covers(self)
        if ge and le:
            return Ordering.EQUAL
        if le:
            return Ordering.BEFORE
        if ge:
            return Ordering.AFTER
        return Ordering.CONCURRENT

    def copy(self) -> VersionVector:
        return VersionVector._wrap(dict(self._v))

    def items(self) -> Iterator[tuple[str, int]]:
        """Entries sorted by replica id, so iteration order never depends on history."""
        return iter(sorted(self._v.items()))

    def replicas(self) -> frozenset[str]:
        return frozenset(self._v)

    def remove_replicas(self, replicas: Iterable[str]) -> None:
        """Forget replicas that left the cluster for good (membership-driven GC).

        Only safe once every live replica has seen all of their events; the caller (membership) decides that.
        """
        for r in replicas:
            self._v.pop(r, None)

    def total(self) -> int:
        """Number of events covered: a cheap size measure for tests and metrics."""
        return sum(self._v.values())

    def __len__(self) -> int:
        return len(self._v)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return NotImplemented
        return self._v == other._v

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"VersionVector({dict(sorted(self._v.items()))!r})"
