"""The difference between a state and a version a peer already has: what ``DotKernel.delta_since`` ships.

A peer sends only its causal context ``since`` (it holds nothing outside it); we hold store ``S`` under context
``C``. The join (module docstring of ``crdt.dot_kernel``) keeps a receiver's dot unless the delta's context covers
it and the delta's store lacks it. So a delta ``(S', C')`` brings the peer to exactly ``join(peer, us)`` iff,
dot by dot:

* new here (in ``C`` not in ``since``): in ``C'`` (the joined context must grow by it), and in ``S'`` if we hold it;
* both saw it and we no longer hold it (removed here): in ``C'`` and not in ``S'``, so the peer drops it if it
  still holds it (a remove makes no dot of its own: the peer's context cannot tell it already applied it);
* both saw it and we hold it: the peer holds it too, or removed it already (it cannot come back, being covered):
  left out of ``C'`` (or shipped in ``S'``, which is the full state's way and not small);
* only the peer saw it: out of ``C'`` (we cannot know the peer does not hold it, and it must keep it).

Hence the unique smallest choice ``S' = S - since`` and ``C' = C - (S & since)``: new dots plus the dots both
saw that we removed. Deferred removes are shipped whole by the caller (few, bounded): they must reach a peer
that holds entries we never saw.

Cost, per replica ``r`` of ``C``: O(1 + both clouds of ``r``) plus the new dots, walked as the counter range
past the peer's vector (O(new dots), the peer's cloud dots in that range included); then, since ``S`` lies inside
``C``, the number of removed dots both saw is ``|C & since| - (|S of r| - |new dots we hold|)``, known without a
walk. Only when it is not zero are the counters both saw walked (stopping at the last one), testing each against
our per-replica index: O(entries of ``r`` + removed dots of ``r``), the price of a context that does not say
which of its dots were removed. The result's context lists every such removed dot (in its cloud unless
contiguous from 1): small for a store whose removes were few, as large as the churn both sides saw otherwise.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sized
from itertools import chain, repeat
from typing import Protocol

from rumor.crdt.causal_context import CausalContext

DotT = tuple[str, int]


class HeldCounters(Container[int], Sized, Protocol):
    """One replica's counters a store holds (the kernel's ``_dots[r]``): membership and size, both O(1)."""


def diff_since(ctx: CausalContext, held: Mapping[str, HeldCounters], since: CausalContext) -> tuple[
        CausalContext, list[DotT]]:
    """``(C', dots of S')`` for the store holding ``held`` (replica -> counters) under ``ctx``, against ``since``.

    The caller builds the delta from the returned dots' entries; see the module docstring for why it is exact.
    """
    out = CausalContext()
    fresh_held: list[DotT] = []
    empty: frozenset[int] = frozenset()
    for r in sorted(set(ctx._vv) | set(ctx._cloud)):
        va, cla = ctx._vv.get(r, 0), ctx._cloud.get(r, empty)
        vb, clb = since._vv.get(r, 0), since._cloud.get(r, empty)
        mine = held.get(r, empty)
        # 1. new dots: ctx's prefix past the peer's vector and ctx's cloud, minus what the peer's cloud has
        picked = [*range(vb + 1, va + 1), *(c for c in cla if c > vb)]
        if clb:
            picked = [c for c in picked if c not in clb]
        new_held = list(filter(mine.__contains__, picked))  # at C speed: this runs once per new dot
        fresh_held += zip(repeat(r, len(new_held)), new_held, strict=True)
        held_new = len(new_held)
        # 2. dots both saw that we no longer hold: their count first, a walk only if there are any
        top = min(va, vb)
        shared_cloud = [c for c in clb if c <= va] + [c for c in cla if c <= vb or c in clb]
        removed = top + len(shared_cloud) - (len(mine) - held_new)
        if removed:
            for c in chain(shared_cloud, range(1, top + 1)):
                if c not in mine:
                    picked.append(c)
                    removed -= 1
                    if not removed:
                        break
        if picked:
            _add_sorted(out, r, sorted(picked))
    return out, fresh_held


def _add_sorted(out: CausalContext, r: str, counters: list[int]) -> None:
    """Adds the dots ``(r, c)`` of ``counters`` (ascending, distinct) to ``out``, which holds none of ``r``: the
    prefix 1, 2, ... n is the vector, the rest the cloud. ``counters[i] >= i + 1`` and equality holds exactly on
    the prefix, so it is found by bisection."""
    lo, hi = 0, len(counters)
    while lo < hi:
        mid = (lo + hi) // 2
        if counters[mid] == mid + 1:
            lo = mid + 1
        else:
            hi = mid
    if lo:
        out._vv[r] = lo
    if lo < len(counters):
        out._cloud[r] = set(counters[lo:])

