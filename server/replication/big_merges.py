"""Received big states joined off the event loop: anti-entropy's million-element set without a frozen node.

A state anti-entropy receives (`ReplicaCore.merge_blob`) of `Offloader.min_bytes` or more is not decoded and merged
inline: the core plans the job on the loop (`ReplicaCore.plan_big_merge`: the checks that need no decoding, and a
copy of what the worker needs of our state, as bytes), the worker does the CPU work (`work`), and the loop finishes
it (`ReplicaCore.finish_big_merge`). Two ways, by what we hold of the key:

- **adopt** (we hold nothing, a small state, or one still only as stored bytes): the worker decodes both and joins
  them; the loop installs that join as the key's state, an assignment, if nothing changed the key meanwhile (a
  `ChangeCounter` tells). If something did, the loop merges the join into the current state instead: correct,
  since the current state includes the one the join was made from, but as slow as before (rare: the key must be
  written within the job's second).
- **diff** (we hold a big decoded state): the worker decodes the received state and keeps only what a holder of our
  context lacks (`delta_since` the context, copied as bytes on the loop); the loop merges that, usually small. No
  check is needed: the context was our state's, and our state only grows (every change is a join), so with ``C``
  the state then, ``X`` ours now (``X`` includes ``C``), ``R`` the received state and ``D`` its diff (``D`` within
  ``R``, and ``C`` joined with ``D`` equals ``C`` joined with ``R``): ``X + D`` lies within ``X + R``, and
  ``X + R = X + C + R = X + C + D = X + D``. A stale diff is as right as a fresh one.

Sessions wait for their merges (`OffloadedMerges.drain`) between round trips and before concluding, so a vector is
never claimed over a merge still running, and a merge that failed fails its session, which claims nothing: the
state is as it was (the worker changed only objects it made). A failure is counted (`ReplicaCore.stats.rejected`)
and, unless it is the peer's bad input, reported to the supervisor: never silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rumor.crdt import encode
from rumor.server.offload import ChangeCounter, Offloader
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.states import decode_state, read_context


@dataclass(frozen=True, slots=True)
class BigMerge:
    """One received state to join off the loop; only bytes, so the worker shares nothing with the loop."""

    key: str
    type_name: str
    data: bytes
    """The received state, encoded."""
    ours: bytes | None
    """Adopt: our state's bytes, None when we hold nothing."""
    context: bytes | None
    """Diff: our state's encoded causal context (None for adopt)."""

    @property
    def adopt(self) -> bool:
        return self.context is None


@dataclass(frozen=True, slots=True)
class BigMergeResult:
    state: Any
    """Adopt: the join of the received state and ours; diff: what the received state holds that we lack."""
    blob: bytes
    """`crdt.encode(state)`: the digest of an adopted join, the log record of a diff."""


def work(job: BigMerge) -> BigMergeResult:
    """The worker's part: pure CPU on bytes and on objects it makes. Raises `ReplicationProtocolError` when the
    received state does not decode as its type claims (the peer's bad input)."""
    received = decode_state(job.type_name, job.data)
    if job.context is not None:
        diff = received.delta_since(read_context(job.context))
        return BigMergeResult(diff, encode(diff))
    if job.ours is not None:
        received.merge(decode_state(job.type_name, job.ours))
        return BigMergeResult(received, encode(received))
    return BigMergeResult(received, job.data)


class MergingCore(Protocol):
    """What the merges need of `ReplicaCore` (named here so this module does not import it: it imports us)."""

    changes: ChangeCounter

    def finish_big_merge(self, job: BigMerge, result: BigMergeResult, *, unchanged: bool) -> None: ...

    def reject(self, reason: str) -> None: ...


class OffloadedMerges:
    """Runs the core's big merges on ``offloader`` as tasks of the loop; ``report(exc)`` hears of every failure that
    is not the peer's bad input (a bug: the supervisor logs, counts and shows it)."""

    def __init__(self, core: MergingCore, offloader: Offloader, report: Callable[[BaseException], None]) -> None:
        self.core = core
        self.offloader = offloader
        self._report = report
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []
        self.done = 0
        """Merges finished so far (tests and benches)."""

    def wants(self, size: int) -> bool:
        return self.offloader.wants(size)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, job: BigMerge) -> None:
        mark = self.core.changes.watch(job.key)
        task = asyncio.get_running_loop().create_task(self._run(job, mark))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: BigMerge, mark: int) -> None:
        core = self.core
        try:
            result = await self.offloader.run(work, job)
            core.finish_big_merge(job, result, unchanged=not core.changes.changed_since(job.key, mark))
            self.done += 1
        except ReplicationProtocolError as exc:  # the peer's state: counted, the session fails, nothing changed
            core.reject(exc.reason)
            self._failures.append(exc)
        except Exception as exc:  # a bug (ours or the worker's): reported, and the session fails
            core.reject("merge_failed")
            self._failures.append(exc)
            self._report(exc)
        finally:
            core.changes.unwatch(job.key)

    async def drain(self) -> list[BaseException]:
        """Waits for every merge started so far (and those their completion starts); returns the failures since the
        last drain (each is already counted and, if a bug, reported)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        failures, self._failures = self._failures, []
        return failures

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


def describe(failures: list[BaseException]) -> str:
    first = failures[0]
    return f"{len(failures)} big merge(s) failed; first: {type(first).__name__}: {first}"[:200]


__all__ = ["BigMerge", "BigMergeResult", "MergingCore", "OffloadedMerges", "describe", "work"]
