"""The node's hybrid logical clock: the one place where the server turns wall time into `HLCTimestamp`s.

crdt/ never reads a clock; this edge does, through an injected `physical_ms` callable plus a configured offset (tests
skew nodes with it). Every timestamp it issues is strictly greater than every timestamp it issued or observed before,
so a write that follows another on this node always sorts later, whatever the wall clock does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rumor.crdt import HLCTimestamp


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class HLCSource:
    """Issues HLC timestamps for local writes and absorbs timestamps seen on reads/merges."""

    def __init__(self, physical_ms: Callable[[], int] = wall_clock_ms, offset_ms: int = 0) -> None:
        self._physical_ms = physical_ms
        self._offset_ms = offset_ms
        self._last: HLCTimestamp | None = None

    @property
    def last(self) -> HLCTimestamp | None:
        return self._last

    def physical_ms(self) -> int:
        return self._physical_ms() + self._offset_ms

    def now(self, after: HLCTimestamp | None = None) -> HLCTimestamp:
        """A fresh timestamp, strictly later than anything issued or observed and than `after` (the value it
        overwrites: a causally later write must sort later even if that value came from a node with a faster clock)."""
        if after is not None:
            self.observe(after)
        self._last = HLCTimestamp.now(self._last, self.physical_ms())
        return self._last

    def observe(self, seen: HLCTimestamp | None) -> None:
        """Remembers a timestamp from elsewhere (a merged delta, the current value of a key)."""
        if seen is not None and (self._last is None or seen > self._last):
            self._last = seen
