"""A push over a stream merged in slices by the runtime (`GossipReplication._merge_push`): every delta merged, the
loop free between slices, and no vector claimed while part of it is still unmerged (the vector covers its groups
from the start). Driven by hand: one `asyncio.sleep(0)` lets the task run exactly one slice."""

from __future__ import annotations

import asyncio

from replication_helpers import Replica

from rumor.server.replication import ReplicationConfig
from rumor.server.replication.runtime import PUSH_SLICE_ENTRIES, GossipReplication
from rumor.server.replication.wire import is_ack
from rumor.server.updates import Increment


def unused_factory(*_args: object) -> object:
    raise AssertionError("no memberlist in this test")


async def test_a_big_push_is_merged_in_slices_and_claims_wait_for_it() -> None:
    a, b = Replica("a"), Replica("b")
    keys = 3 * PUSH_SLICE_ENTRIES
    for i in range(keys):
        a.keyspace.apply_local(f"k{i:03d}", Increment(amount=1))
    pushes = a.core.tick(0.0, ["a", "b"]).pushes
    assert len(pushes) == 1
    runtime = GossipReplication(ReplicationConfig(), unused_factory)  # type: ignore[arg-type]
    runtime.core = b.core
    b.core.digests.flush(10**6)
    assert b.core.claimable()
    merging = asyncio.get_running_loop().create_task(runtime._merge_push(pushes[0][1], "a"))
    await asyncio.sleep(0)  # the task merges its first slice and yields
    assert not merging.done()
    assert len(b.keyspace) == PUSH_SLICE_ENTRIES
    assert not b.core.claimable()  # the vector already covers the group: no claim until it is all merged
    assert is_ack(await merging)
    assert len(b.keyspace) == keys and b.core.stats.deltas_merged == keys
    b.core.digests.flush(10**6)
    assert b.core.claimable()
