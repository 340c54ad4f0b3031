"""The cyclic garbage collector's policy for a serving node: no collection holds the event loop for long.

CPython frees almost everything by reference counting; the cyclic collector only finds garbage that refers to
itself. A young collection scans what was allocated lately (and whatever those objects refer to), so its cost does
not grow with the keyspace. A full collection scans every tracked object the process holds, and a node holds many:
each decoded state in the cache (`server.state_cache`) is several (state, context, dicts, entries). CPython starts
one after every 11 middle collections once the objects that survived young collections since the last full one
exceed a quarter of the long-lived ones, which a growing cache or a big received value meets: measured by
`bench/gc_pause_probe.py`, a full collection over 300k small cached states and a 1M-element set holds the loop for
about a second, far past the 200 ms a loop may ever be held (issue 14) and long enough to delay probe answers.

So, once the keyspace is recovered (`tune_collector`):
- what lives now is frozen (moved out of the collector's reach for good: imported code, what recovery built);
- young collections run every 4,000 net allocations, not every 700 (a request allocates many short-lived objects,
  nearly all freed by reference counting: collecting every 700 spent about 6% of a write's CPU finding nothing);
- the middle generation is never collected by itself either: what survives one young collection stays until the
  next full one. Each object a node keeps (a decoded state joining the cache, its entry, its delta) is then scanned
  once, not twice: a middle collection every fourth young one held the loop 3-12 ms each at 1M keys under
  bench/scale_bench.py's write load (a per-collection timer on `rumor serve`), and the churn of a 300k-state cache
  took 9.8 s of CPU against 11.6 s (`bench/gc_pause_probe.py`). What that leaves for the full collection is cyclic
  garbage that outlived one young collection: 202 objects after 10,000 requests from clients that open and close
  connections (21 with the middle generation collected), the same probe;
- full collections never start by themselves. What they would find is little (above). `FullCollections` collects
  it at a fixed interval (`gc_full_interval_s`, an hour by default; 0 never), so it stays bounded, at the price of
  one full collection's pause an hour;
- `CollectionPauses` times every collection by generation into `rumor_gc_pause_seconds`, so an operator sees what
  the collector costs, the hourly collection included.

Work that allocates millions of objects that all live on (recovery, decoding a big received state, on the loop or
on a worker) runs with the collector paused (`collector_paused`): the young collections meanwhile would traverse the
half-built value again and again (measured: a 1M-element set decodes 2x faster paused).

Embedded nodes (a program importing `rumor.server`) leave the collector as the program set it: the policy is the
process's, and only `rumor serve` owns its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from rumor.server.metrics import GC_PAUSES, Histogram

#: net allocations between young collections
YOUNG_THRESHOLD = 4_000
#: "never": more collections than a process makes in its life (the largest threshold CPython takes, a C int); the
#: middle generation's threshold (young collections between two of its own; CPython: 10) and the full one's
NEVER = (1 << 31) - 1
DEFAULT_FULL_INTERVAL_S = 3600.0


_pause_lock = threading.Lock()
_pause_depth = 0
_resume = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (see the module docstring). Nests and may run on several threads at once
    (the loop and a worker): the collector resumes when the last pause ends, if it ran before the first began."""
    global _pause_depth, _resume
    with _pause_lock:
        if _pause_depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pause_depth += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pause_depth -= 1
            if _pause_depth == 0 and _resume:
                gc.enable()


def tune_collector() -> None:
    """The serving node's policy (module docstring), applied once the keyspace is recovered."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)


class CollectionPauses:
    """A `gc.callbacks` hook timing each collection into ``histogram`` by generation."""

    def __init__(self, histogram: Histogram = GC_PAUSES, clock: Callable[[], float] = time.perf_counter) -> None:
        self.histogram = histogram
        self._clock = clock
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
        elif self._started is not None:
            self.histogram.observe(self._clock() - self._started, str(info.get("generation", "")))
            self._started = None

    def install(self) -> Callable[[], None]:
        """Starts timing; returns the call that stops it."""
        gc.callbacks.append(self)

        def remove() -> None:
            if self in gc.callbacks:
                gc.callbacks.remove(self)

        return remove


class FullCollections:
    """Runs a full collection every ``interval_s`` (under the node's supervisor), the only full collections a tuned
    process makes. Sleep and collect are injected so tests run rounds without waiting."""

    def __init__(self, interval_s: float, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 collect: Callable[[int], int] = gc.collect) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        self._sleep = sleep
        self._collect = collect
        self.collections = 0
        self.found = 0

    async def run(self) -> None:
        while True:
            await self._sleep(self.interval_s)
            self.found += self._collect(2)
            self.collections += 1


__all__ = ["DEFAULT_FULL_INTERVAL_S", "CollectionPauses", "FullCollections", "collector_paused",
           "tune_collector"]
