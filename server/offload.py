"""`Offloader`: the CPU-heavy work of big states (decode, join, diff, encode) on a worker thread, off the event loop.

Why: everything a node does runs on one event loop, and a million-element set costs seconds of pure CPU to decode,
merge, diff or encode (measured: decode 0.9 s, encode 0.4 s, `delta_since` 1.6 s). A loop held that long answers
no SWIM ping, so peers suspect a healthy node, and every request waits behind it (`server.loop_lag`).

Why a thread and not a process: the work takes and returns Python objects (a decoded state, a join), and pickling
them to a process costs about what decoding does. Under CPython's GIL a busy worker thread hands the GIL back to the
loop at least every switch interval (5 ms), except inside one long C call: measured on a 1M-element set, the
loop's lag while the worker decodes, encodes, diffs or merges stays at p99 8-50 ms, max 35-110 ms (a single msgpack
call on a whole column), against 0.4-1.6 s inline. Small states stay inline (`min_bytes`): a thread hop costs more
than their whole work.

What runs on the worker must not race the loop's mutations, which stay on the loop: a job works on bytes (immutable)
and objects only it holds (decoded there), or reads a live state and is checked on the loop afterwards with a
`ChangeCounter` (a mutation meanwhile discards the result). Each caller says how, where it offloads.

``enabled=False`` runs every job inline, as before this module: the baseline the benches compare against.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from rumor.server.collector import collector_paused

T = TypeVar("T")

#: states this big (encoded bytes) and up are worked on off the loop: the work of 64 KiB of state is a few ms
OFFLOAD_MIN_BYTES = 64 * 1024


class Offloader:
    """One worker thread (jobs run one at a time, in order: they compete for the GIL with the loop, not with each
    other), created on first use."""

    def __init__(self, *, enabled: bool = True, min_bytes: int = OFFLOAD_MIN_BYTES) -> None:
        if min_bytes < 0:
            raise ValueError("min_bytes must be >= 0")
        self.enabled = enabled
        self.min_bytes = min_bytes
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.jobs = 0
        """Jobs run on the worker so far (tests and benches: proof the off-loop path was taken)."""

    def wants(self, size: int) -> bool:
        """Whether work on a state of ``size`` encoded bytes goes to the worker."""
        return self.enabled and size >= self.min_bytes

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker (inline when disabled); its exception is raised here, to the awaiting caller."""
        if not self.enabled:
            return fn(*args)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rumor-offload")
        self.jobs += 1
        return await asyncio.get_running_loop().run_in_executor(self._executor, _collector_paused, fn, *args)

    def close(self) -> None:
        """Stops the worker once its current job ends (a job in flight is not interrupted: its result is dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _collector_paused(fn: Callable[..., T], *args: Any) -> T:
    """A job builds big states that all live on (a decode, a join): the young collections it would trigger traverse
    the half-built state again and again, each holding the GIL, so the loop would wait on them (`server.collector`)."""
    with collector_paused():
        return fn(*args)


class ChangeCounter:
    """Counts changes of the keys being worked on off the loop, so the loop can tell whether a result computed from
    a key's earlier state still describes it. Callers report every change of a key (`changed`); only watched keys
    cost anything (a dict lookup otherwise)."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}  # key -> [changes since the first watch, watchers]

    def watch(self, key: str) -> int:
        """Start watching ``key``; returns the mark to compare with `changed_since` (pair each with `unwatch`)."""
        row = self._counts.setdefault(key, [0, 0])
        row[1] += 1
        return row[0]

    def unwatch(self, key: str) -> None:
        row = self._counts.get(key)
        if row is not None:
            row[1] -= 1
            if row[1] <= 0:
                del self._counts[key]

    def changed(self, key: str) -> None:
        row = self._counts.get(key)
        if row is not None:
            row[0] += 1

    def changed_since(self, key: str, mark: int) -> bool:
        row = self._counts.get(key)
        return row is None or row[0] != mark

    def __contains__(self, key: str) -> bool:
        return key in self._counts


__all__ = ["OFFLOAD_MIN_BYTES", "ChangeCounter", "Offloader"]
