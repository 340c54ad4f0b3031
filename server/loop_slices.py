"""Work on the event loop in slices bounded by time, not by count.

Why time: a count of keys or entries a slice takes is only as good as the guess of what one costs, and that cost
varies a hundredfold (a small counter's rehash against a register whose stored bytes must be read first; a quiet box
against one whose two cores also run a writer thread and three other nodes). Counted slices of "a few ms" measured
15-60 ms each under the issue-14 write loads, and each one is time every timer, probe answer and client request
waits. A slice that looks at the clock after every small step holds the loop for its budget plus one step.

`TimeSlices` is that clock: work calls `due()` between steps (cheap: one clock read) and `await pause()` when it
says so, or `await checkpoint()` for both at once. The clock is injected, so tests drive it by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

SLICE_S = 0.002
"""The loop time one slice of background work may take (plus one step): what a client's request or a probe answer
waits behind each slice at worst. Requests' own batches (`Node.update_batch`) take the same."""


class TimeSlices:
    """Slices of at most ``budget_s`` seconds (by ``clock``) of one piece of work, with the loop free between."""

    __slots__ = ("_began", "_budget_s", "_clock", "pauses")

    def __init__(self, budget_s: float = SLICE_S, clock: Callable[[], float] = time.perf_counter) -> None:
        self._budget_s = budget_s
        self._clock = clock
        self._began = clock()
        self.pauses = 0
        """How many times the work gave the loop back so far."""

    def due(self) -> bool:
        """Whether the current slice has had its budget: the work should `pause` before its next step."""
        return self._clock() - self._began >= self._budget_s

    async def pause(self) -> None:
        """Gives the loop back (whatever is ready runs first), then starts the next slice."""
        await asyncio.sleep(0)
        self.pauses += 1
        self._began = self._clock()

    async def checkpoint(self) -> None:
        """`pause` if the slice is `due`: call it between two steps of the work."""
        if self.due():
            await self.pause()


__all__ = ["SLICE_S", "TimeSlices"]
