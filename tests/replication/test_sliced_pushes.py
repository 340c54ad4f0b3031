"""Replication work on the loop in time slices: a push over a stream merged by the runtime
(`GossipReplication._merge_push`), every delta merged, the loop free between slices, and no vector claimed while part
of it is still unmerged (the vector covers its groups from the start); dirty digests rehashed the same way. Driven by
hand: the runtime's slice clock says every step used up its slice, so one `asyncio.sleep(0)` lets the task run
exactly one step."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from functools import partial

from replication_helpers import Replica

from rumor.server.loop_slices import SLICE_S
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.runtime import (
    DIGEST_STEP_KEYS,
    PUSH_STEP_ENTRIES,
    SEAL_STEP_ENTRIES,
    GossipReplication,
)
from rumor.server.replication.wire import is_ack
from rumor.server.updates import Increment


def unused_factory(*_args: object) -> object:
    raise AssertionError("no memberlist in this test")


def slice_long_clock() -> Callable[[], float]:
    """A clock each reading of which is a whole slice after the last: every step of work uses up its slice."""
    return partial(next, itertools.count(0.0, SLICE_S))


def runtime_of(replica: Replica, clock: Callable[[], float]) -> GossipReplication:
    """A runtime driving ``replica``'s core by hand (no memberlist), its slices timed by ``clock``."""
    runtime = GossipReplication(ReplicationConfig(), unused_factory)  # type: ignore[arg-type]
    runtime.core = replica.core
    runtime.slice_clock = clock
    return runtime


def pushes_of(writer: Replica, keys: int) -> list[tuple[str, bytes]]:
    """``keys`` increments written on ``writer``, then its push round to "b"."""
    for i in range(keys):
        writer.keyspace.apply_local(f"k{i:04d}", Increment(amount=1))
    return writer.core.tick(0.0, [writer.core.node_id, "b"]).pushes


async def test_a_big_push_is_merged_in_slices_and_claims_wait_for_it() -> None:
    a, b = Replica("a"), Replica("b")
    keys = 3 * PUSH_STEP_ENTRIES
    pushes = pushes_of(a, keys)
    assert len(pushes) == 1
    runtime = runtime_of(b, slice_long_clock())
    b.core.digests.flush(10**6)
    assert b.core.claimable()
    merging = asyncio.get_running_loop().create_task(runtime._merge_push(pushes[0][1], "a"))
    await asyncio.sleep(0)  # the task merges its first step, finds its slice spent, and yields
    assert not merging.done()
    assert len(b.keyspace) == PUSH_STEP_ENTRIES
    assert not b.core.claimable()  # the vector already covers the group: no claim until it is all merged
    await asyncio.sleep(0)
    assert len(b.keyspace) == 2 * PUSH_STEP_ENTRIES
    assert is_ack(await merging)
    assert len(b.keyspace) == keys and b.core.stats.deltas_merged == keys
    b.core.digests.flush(10**6)
    assert b.core.claimable()


async def test_a_push_merged_on_a_fast_clock_takes_one_slice() -> None:
    """When the clock says the steps are quick, the whole push is merged before the task first yields."""
    a, b = Replica("a"), Replica("b")
    keys = 3 * PUSH_STEP_ENTRIES
    pushes = pushes_of(a, keys)
    runtime = runtime_of(b, lambda: 0.0)
    merging = asyncio.get_running_loop().create_task(runtime._merge_push(pushes[0][1], "a"))
    await asyncio.sleep(0)
    assert merging.done() and is_ack(merging.result())
    assert len(b.keyspace) == keys


async def test_dirty_digests_are_rehashed_in_time_slices() -> None:
    replica = Replica("a")
    keys = 3 * DIGEST_STEP_KEYS
    for i in range(keys):
        replica.keyspace.apply_local(f"k{i:03d}", Increment(amount=1))
    digests = replica.core.digests
    assert digests.dirty == keys
    runtime = runtime_of(replica, slice_long_clock())
    flushing = asyncio.get_running_loop().create_task(runtime.flush_digests())
    await asyncio.sleep(0)
    assert not flushing.done() and digests.dirty == keys - DIGEST_STEP_KEYS, "one step, then the loop's turn"
    await flushing
    assert digests.dirty == 0 and len(digests.tree) == keys


async def test_local_writes_are_sealed_in_time_slices_and_all_pushed() -> None:
    """A push round's seal of many batched writes goes in steps with the loop free between; the tick seals what is
    left, and the peer gets every write."""
    a, b = Replica("a"), Replica("b")
    keys = 3 * SEAL_STEP_ENTRIES + 5
    for i in range(keys):
        a.keyspace.apply_local(f"k{i:04d}", Increment(amount=1))
    runtime = runtime_of(a, slice_long_clock())
    batch = a.core.disseminator.batch
    sealing = asyncio.get_running_loop().create_task(runtime._seal_in_slices())
    await asyncio.sleep(0)
    assert not sealing.done() and len(batch) == keys - SEAL_STEP_ENTRIES, "one step, then the loop's turn"
    await sealing
    assert len(batch) == 5, "the tick seals the last few"
    pushes = a.core.tick(0.0, ["a", "b"]).pushes
    assert len(batch) == 0 and pushes
    receiver = runtime_of(b, slice_long_clock())
    for member, payload in pushes:
        assert member == "b" and is_ack(await receiver._merge_push(payload, "a"))
    assert len(b.keyspace) == keys
