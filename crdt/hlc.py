"""Hybrid logical clock timestamps (Kulkarni et al., 2014) for last-writer-wins tie-breaking.

The caller passes physical time in (milliseconds): ``crdt`` never reads a clock, which keeps every type
deterministic and testable. An HLC stays close to physical time yet never runs backwards, and a receive event
moves it past everything observed, so causally later writes get larger timestamps even across skewed clocks
(the LWW types additionally use causal contexts, so a causally later write wins even if its clock lags).
"""

from __future__ import annotations

from typing import NamedTuple

from rumor.crdt.errors import InvalidOperationError


class HLCTimestamp(NamedTuple):
    """``(wall_ms, logical)``; ordered lexicographically, immutable, hashable. Ties are broken by replica id."""

    wall_ms: int
    logical: int

    @classmethod
    def now(cls, last: HLCTimestamp | None, physical_ms: int) -> HLCTimestamp:
        """Timestamp for a local or send event: strictly greater than ``last`` and >= ``physical_ms``."""
        if last is None or physical_ms > last.wall_ms:
            return cls(physical_ms, 0)
        return cls(last.wall_ms, last.logical + 1)

    def observe(self, remote: HLCTimestamp, physical_ms: int) -> HLCTimestamp:
        """Timestamp for a receive event of ``remote`` when ``self`` is the last local timestamp.

        The result is strictly greater than both ``self`` and ``remote`` and >= ``physical_ms``.
        """
        wall = max(self.wall_ms, remote.wall_ms, physical_ms)
        if wall == self.wall_ms and wall == remote.wall_ms:
            logical = max(self.logical, remote.logical) + 1
        elif wall == self.wall_ms:
            logical = self.logical + 1
        elif wall == remote.wall_ms:
            logical = remote.logical + 1
        else:
            logical = 0
        return HLCTimestamp(wall, logical)

    @classmethod
    def checked(cls, wall_ms: int, logical: int) -> HLCTimestamp:
        if type(wall_ms) is not int or type(logical) is not int or wall_ms < 0 or logical < 0:
            raise InvalidOperationError(f"HLC fields must be non-negative ints, got ({wall_ms!r}, {logical!r})")
        return cls(wall_ms, logical)


class HybridLogicalClock:
    """Stateful convenience around ``HLCTimestamp`` for one replica; still pure (time is passed in)."""

    __slots__ = ("last",)

    def __init__(self, last: HLCTimestamp | None = None) -> None:
        self.last = last

    def now(self, physical_ms: int) -> HLCTimestamp:
        self.last = HLCTimestamp.now(self.last, physical_ms)
        return self.last

    def observe(self, remote: HLCTimestamp, physical_ms: int) -> HLCTimestamp:
        base = self.last if self.last is not None else HLCTimestamp(0, 0)
        self.last = base.observe(remote, physical_ms)
        return self.last
