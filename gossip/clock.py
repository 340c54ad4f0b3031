"""Time sources and addresses shared by every gossip module.

Protocol state machines never read a clock: drivers pass ``now`` in. The only two real clocks are here
(`MonotonicClock`) and at the asyncio edges; the simulator drives a `ManualClock` so a whole cluster runs in
virtual time, reproducibly, with no sleeps.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

Address = tuple[str, int]
"""A node's network address: (host, port). Datagrams and streams share the port number."""


@runtime_checkable
class Clock(Protocol):
    """A monotonic source of seconds. Only differences between readings are meaningful."""

    def now(self) -> float: ...


class MonotonicClock:
    """The real clock (``time.monotonic``), used by the asyncio driver in production."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: the simulator's and the unit tests' notion of time."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward; moving backwards would break every timeout computed from it."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back (advance by {seconds})")
        self._now += seconds

    def set(self, t: float) -> None:
        """Jump to an absolute time, which must not be in the past."""
        if t < self._now:
            raise ValueError(f"a monotonic clock cannot go back (from {self._now} to {t})")
        self._now = float(t)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"
