"""`LoopLagMonitor`: how late the event loop wakes a periodic timer, the one figure that shows a node's stalls.

Everything a node does runs on one event loop: a request, a gossip probe answer, a checkpoint's encoding, the merge
of a received state. Work that holds the loop for 300 ms delays every request by up to 300 ms and can make a peer's
probe time out, so a healthy peer gets marked suspect. Request latencies show a stall only when a request happened
to wait behind it; a timer that asks to wake every `interval_s` sees every stall, whoever caused it.

Each tick records lag = (when the loop woke us) - (when we asked to be woken), never below zero, into the
`rumor_event_loop_lag_seconds` histogram and raises the `rumor_event_loop_lag_max_seconds` gauge when it is a new
maximum. Benches read both through `/metrics` (the histogram's bucket counts before and after a phase give that
phase's distribution). Clock and sleep are injected so tests drive ticks without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from rumor.server.metrics import Gauge, Histogram

#: 50 ms: 20 wake-ups a second cost nothing measurable, and a stall shorter than the interval is still seen whole
#: (the timer that falls due during it wakes late by what is left of it).
DEFAULT_INTERVAL_S = 0.05


class LoopLagMonitor:
    """Records each tick's lag into ``histogram`` and the largest so far into ``max_gauge``."""

    def __init__(
        self,
        histogram: Histogram,
        max_gauge: Gauge,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        self.histogram = histogram
        self.max_gauge = max_gauge
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self.max_s = 0.0

    def observe(self, expected: float, woke: float) -> float:
        """One tick: the lag of a wake-up due at ``expected`` that came at ``woke`` (a clock's coarseness can make
        it early by a hair: that counts as no lag)."""
        lag = max(0.0, woke - expected)
        self.histogram.observe(lag)
        if lag > self.max_s:
            self.max_s = lag
            self.max_gauge.set(lag)
        return lag

    async def run(self) -> None:
        """Ticks until cancelled (under the node's supervisor). Each tick is due `interval_s` after the previous
        wake-up, not on a fixed grid: after a long stall it measures the next stall, not a backlog of missed ticks."""
        while True:
            expected = self._clock() + self.interval_s
            await self._sleep(self.interval_s)
            self.observe(expected, self._clock())


__all__ = ["DEFAULT_INTERVAL_S", "LoopLagMonitor"]
