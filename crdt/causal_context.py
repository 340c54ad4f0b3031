"""Causal context: the set of every dot a state has seen, stored as a compact vector plus a dot cloud.

Delivery of deltas out of order leaves gaps (A:1, A:2, A:5); the dots past the contiguous prefix live in the
cloud until the gap fills, at which point they fold into the vector. Because folding happens on every
insertion, the representation is canonical (equal contexts have equal fields) and its size is bounded by the
number of replicas plus the number of genuinely missing events, never by how many elements were removed.

Dots are handled as plain ``(replica, counter)`` tuples; ``Dot`` instances work too (they are tuples).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rumor.crdt.dot import Dot
from rumor.crdt.version_vector import VersionVector


class CausalContext:
    """A set of dots, self-compacting. Internals (``_vv``, ``_cloud``) are read directly by the dot kernel."""

    __slots__ = ("_cloud", "_vv")

    def __init__(self, dots: Iterable[tuple[str, int]] = ()) -> None:
        self._vv: dict[str, int] = {}
        self._cloud: dict[str, set[int]] = {}
        for dot in dots:
            self.add(dot)

    @classmethod
    def from_vector(cls, vector: VersionVector) -> CausalContext:
        ctx = cls.__new__(cls)
        ctx._vv = dict(vector._v)
        ctx._cloud = {}
        return ctx

    # -- queries -------------------------------------------------------------------------------------------
    def contains(self, dot: tuple[str, int]) -> bool:
        r, c = dot
        if c <= self._vv.get(r, 0):
            return True
        cl = self._cloud.get(r)
        return cl is not None and c in cl

    __contains__ = contains

    def next_dot(self, replica: str) -> Dot:
        """The dot ``replica`` would use for its next event. Does not record it: merging the delta does.

        It is past every dot seen from ``replica`` (cloud included), so a replica that restarted from an old
        snapshot and then heard of its own later events never reuses a dot.
        """
        return Dot(replica, self.max_counter(replica) + 1)

    def max_counter(self, replica: str) -> int:
        """Highest counter seen from ``replica`` (including the cloud)."""
        cl = self._cloud.get(replica)
        top = self._vv.get(replica, 0)
        return max(top, max(cl)) if cl else top

    @property
    def vector(self) -> VersionVector:
        """The compact (contiguous-prefix) part, as a copy."""
        return VersionVector._wrap(dict(self._vv))

    def covers(self, other: CausalContext) -> bool:
        """True when every dot of ``other`` is in ``self``."""
        vv = self._vv
        for r, n in other._vv.items():
            # self is compact, so (r, vv[r] + 1) is never in its cloud: a longer prefix cannot be covered.
            if n > vv.get(r, 0):
                return False
        return all(self.contains((r, c)) for r, cs in other._cloud.items() for c in cs)

    def dots(self) -> Iterator[Dot]:
        """Every dot, sorted (can be long: one per event; meant for tests and small contexts)."""
        for r in sorted(set(self._vv) | set(self._cloud)):
            for c in range(1, self._vv.get(r, 0) + 1):
                yield Dot(r, c)
            for c in sorted(self._cloud.get(r, ())):
                yield Dot(r, c)

    def cloud_size(self) -> int:
        """Number of dots waiting in the cloud (not yet contiguous)."""
        return sum(len(cs) for cs in self._cloud.values())

    def size(self) -> int:
        """Stored size: vector entries plus cloud dots. Bounded by replicas + gaps, never by history."""
        return len(self._vv) + self.cloud_size()

    def is_empty(self) -> bool:
        return not self._vv and not self._cloud

    # -- mutation ------------------------------------------------------------------------------------------
    def add(self, dot: tuple[str, int]) -> None:
        r, c = dot
        top = self._vv.get(r, 0)
        if c <= top:
            return
        if c == top + 1:
            self._vv[r] = c
            if r in self._cloud:
                self._fold(r)
        else:
            cl = self._cloud.get(r)
            if cl is None:
                self._cloud[r] = {c}
            else:
                cl.add(c)

    def merge(self, other: CausalContext) -> None:
        """Union, in place; cost O(size of ``other``) plus the cloud dots it makes contiguous."""
        vv = self._vv
        cloud = self._cloud
        for r, n in other._vv.items() if other._vv else ():
            old = vv.get(r, 0)
            if n > old:
                vv[r] = n
                cl = cloud.get(r)
                if cl is not None:
                    if n - old < len(cl):
                        for c in range(old + 1, n + 1):
                            cl.discard(c)
                    else:
                        cl.difference_update([c for c in cl if c <= n])
                    self._fold(r)
        for r, cs in other._cloud.items() if other._cloud else ():
            top = vv.get(r, 0)
            cl = cloud.get(r)
            if cl is None:
                if len(cs) == 1:  # the common delta shape: one fresh dot
                    for c in cs:
                        if c == top + 1:
                            vv[r] = c
                        elif c > top:
                            cloud[r] = {c}
                    continue
                cl = cloud[r] = set()
            cl.update([c for c in cs if c > top])
            self._fold(r)

    def _fold(self, replica: str) -> None:
        """Move cloud dots that became contiguous into the vector; drop an emptied cloud entry."""
        cl = self._cloud[replica]
        n = self._vv.get(replica, 0)
        if n + 1 in cl:
            while n + 1 in cl:
                n += 1
                cl.remove(n)
            self._vv[replica] = n
        if not cl:
            del self._cloud[replica]

    def remove_replicas(self, replicas: Iterable[str]) -> None:
        """Forget replicas that left for good (membership-driven GC; see ``VersionVector.remove_replicas``)."""
        for r in replicas:
            self._vv.pop(r, None)
            self._cloud.pop(r, None)

    # -- value semantics -----------------------------------------------------------------------------------
    def copy(self) -> CausalContext:
        ctx = CausalContext.__new__(CausalContext)
        ctx._vv = dict(self._vv)
        ctx._cloud = {r: set(cs) for r, cs in self._cloud.items()}
        return ctx

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self._vv == other._vv and self._cloud == other._cloud

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        cloud = {r: sorted(cs) for r, cs in sorted(self._cloud.items())}
        return f"CausalContext(vector={dict(sorted(self._vv.items()))!r}, cloud={cloud!r})"
