"""Big states through the real runtime on loopback (`GossipReplication` + `Node`, in-memory storage): a set too big
for the loop syncs through the worker (merges, digests, diffs all off the loop) and converges with local writes
made on both sides meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

import msgpack
import pytest

from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.memberlist import Memberlist
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.member_meta import advertised
from rumor.server.replication.runtime import GossipReplication
from rumor.server.updates import SetChange

pytestmark = pytest.mark.integration  # Memberlist over real UDP/TCP sockets on 127.0.0.1

GOSSIP = Config.local(gossip_interval_s=0.05)
ELEMENTS = 30_000  # about 150 KB encoded: past the offloader's 64 KiB


def make_memberlist(delegate: Delegate, node_id: str) -> Memberlist:
    transport = AsyncioTransport(("127.0.0.1", 0), None, GOSSIP.max_packet_bytes, GOSSIP.max_stream_bytes)
    return Memberlist(GOSSIP, node_id, transport, delegate=delegate, meta=msgpack.packb(advertised()))


async def wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def elements(node: Node) -> set[object]:
    item = node.keyspace.item("big")
    return set() if item is None else set(item.value)


async def test_a_big_set_syncs_through_the_worker_and_keeps_both_sides_writes() -> None:
    async with AsyncExitStack() as stack:
        first = GossipReplication(ReplicationConfig(push_interval_s=0.05, sync_interval_s=0.3), make_memberlist)
        n1 = await stack.enter_async_context(Node(ServerConfig(in_memory=True, node_id="n1"), replication=first))
        await n1.update_batch([("big", SetChange(add=tuple(range(ELEMENTS))), None)])
        assert first.memberlist is not None
        seeds = (first.memberlist.transport.local_address,)
        second = GossipReplication(ReplicationConfig(push_interval_s=0.05, sync_interval_s=0.3, seeds=seeds),
                                   make_memberlist)
        n2 = await stack.enter_async_context(Node(ServerConfig(in_memory=True, node_id="n2"), replication=second))
        await n2.update_batch([("big", SetChange(add=("n2-only",)), None)])
        await wait_for(lambda: len(elements(n2)) == ELEMENTS + 1, 60.0)
        await n1.update_batch([("big", SetChange(add=("n1-later",)), None)])  # pushed as a small delta
        expected = {*range(ELEMENTS), "n2-only", "n1-later"}
        await wait_for(lambda: elements(n1) == expected and elements(n2) == expected, 60.0)
        assert first.offloader.jobs + second.offloader.jobs > 0  # the big state's work went to a worker
        assert second.core is not None and second.core.big_merges is not None and second.core.big_merges.done >= 1
        assert not n1.supervisor.failing() and not n2.supervisor.failing()
