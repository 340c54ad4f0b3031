"""The asyncio binding on real loopback sockets: Nodes with in-memory storage, Memberlist over UDP/TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import msgpack
import pytest

from rumor.crdt import PNCounter
from rumor.gossip.clock import Address
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.memberlist import Memberlist
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.config import ServerConfig
from rumor.server.consistency import Consistency, Level
from rumor.server.node import Node
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.member_meta import advertised
from rumor.server.replication.runtime import GossipReplication
from rumor.server.updates import Increment, SetChange

pytestmark = pytest.mark.integration  # Memberlist over real UDP/TCP sockets on 127.0.0.1

GOSSIP = Config.local(gossip_interval_s=0.05)


#: fast failure detection (a crash is a death within about a second), for tests about dead members
QUICK_DEATH = Config.local(gossip_interval_s=0.05, probe_interval_s=0.3, probe_timeout_s=0.15, suspicion_mult=1,
                           suspicion_max_timeout_mult=1)


def make_memberlist(delegate: Delegate, node_id: str, gossip: Config = GOSSIP, meta: bytes = b"") -> Memberlist:
    """How a Node's replication gets its gossip member (the node id is known only once storage is open)."""
    transport = AsyncioTransport(("127.0.0.1", 0), None, gossip.max_packet_bytes, gossip.max_stream_bytes)
    return Memberlist(gossip, node_id, transport, delegate=delegate, meta=meta)


@asynccontextmanager
async def cluster(n: int, gossip: Config = GOSSIP,
                  meta: Callable[[str], bytes] = lambda _node_id: b"") -> AsyncIterator[list[Node]]:
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        seeds: tuple[Address, ...] = ()
        for i in range(n):
            replication = GossipReplication(ReplicationConfig(push_interval_s=0.05, sync_interval_s=0.3, seeds=seeds),
                                      lambda delegate, node_id: make_memberlist(delegate, node_id, gossip,
                                                                                meta(node_id)))
            node = Node(ServerConfig(in_memory=True, node_id=f"n{i}"), replication=replication)
            nodes.append(await stack.enter_async_context(node))
            if not seeds:
                assert replication.memberlist is not None
                seeds = (replication.memberlist.transport.local_address,)
        # joining is background work retried with backoff (1, 2, 4 s...): on a loaded machine a first attempt may miss
        await wait_for(lambda: all(n.replication.cluster_size() == len(nodes) for n in nodes), 30.0)
        yield nodes


async def wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_deltas_spread_and_levels_count_acknowledgements() -> None:
    async with cluster(3) as nodes:
        a, b, c = nodes
        result = await a.update("visits", Increment(amount=5), consistency=Consistency(Level.ALL, 2_000))
        assert result.acks == 3 and result.satisfied
        assert b.keyspace.item("visits") is not None  # acknowledged by b: merged (and durable) before the ack
        await c.update("tags", SetChange(add=("x", "y")))  # default level: local, spread by gossip
        await wait_for(lambda: a.keyspace.item("tags") is not None and b.keyspace.item("tags") is not None, 10.0)
        item = await b.read("visits", consistency=Consistency(Level.QUORUM, 2_000))
        assert item is not None and item.value == 5
        info = a.replication.cluster_info()  # what GET /v1/cluster shows
        assert info["cluster_size"] == 3 and {m["id"] for m in info["members"]} == {"n0", "n1", "n2"}


async def test_sessions_send_context_rows_only_to_members_whose_metadata_says_they_read_them() -> None:
    """n1 publishes that it reads context rows (`member_meta`); n0 publishes nothing, as a node of an older version
    would not: n0's sessions may send n1 context rows, n1's send n0 none. A big set changed on both converges."""
    async with cluster(2, meta=lambda node_id: msgpack.packb(advertised()) if node_id == "n1" else b"") as nodes:
        n0, n1 = nodes
        assert isinstance(n0.replication, GossipReplication) and isinstance(n1.replication, GossipReplication)
        assert n0.replication.peer_reads_contexts("n1") and not n1.replication.peer_reads_contexts("n0")
        assert not n0.replication.peer_reads_contexts("nobody")
        await n0.update("big", SetChange(add=tuple(range(5_000))))
        await n1.update("big", SetChange(add=("from n1",)))
        expected = {*range(5_000), "from n1"}
        await wait_for(lambda: all((item := n.keyspace.item("big")) is not None and set(item.value) == expected
                                   for n in nodes), 10.0)


async def test_read_with_r_all_merges_and_repairs() -> None:
    async with cluster(3) as nodes:
        a, b, c = nodes
        # A state only c has (merged behind replication's back, as if its pushes were lost).
        delta = PNCounter().increment("elsewhere", 7)
        c.keyspace.merge_remote("hidden", "counter", delta)
        item = await a.read("hidden", consistency=Consistency(Level.ALL, 2_000))
        assert item is not None and item.value == 7
        await wait_for(lambda: b.keyspace.item("hidden") is not None, 10.0)  # pushed back or anti-entropy


async def test_quorum_counts_members_that_are_down_so_a_minority_answers_short() -> None:
    """Issue 11: `w=quorum` is a majority of the known cluster, not of who is alive right now."""
    async with cluster(3, QUICK_DEATH) as nodes:
        a, b, c = nodes
        quorum = Consistency(Level.QUORUM, 200)
        first = await a.update("retried", Increment(amount=1), op_id="op-1", consistency=quorum)
        assert first.satisfied and not first.replayed
        for gone in (b, c):  # crash: no leave announcement, so the members stay in the cluster
            assert gone.replication.memberlist is not None
            await gone.replication.memberlist.shutdown()
        await wait_for(lambda: len(a.replication.live_ids()) == 1, 10.0)  # both declared dead by a
        assert a.replication.cluster_size() == 3
        result = await a.update("k", Increment(amount=1), consistency=Consistency(Level.QUORUM, 200))
        assert (result.acks, result.required) == (1, 2) and not result.satisfied
        assert a.keyspace.item("k") is not None  # applied and durable locally all the same (available first)
        # a retry of the first write is answered from its stored result, but its level is met anew, not assumed
        replay = await a.update("retried", Increment(amount=1), op_id="op-1", consistency=quorum)
        assert replay.replayed and (replay.acks, replay.required) == (1, 2) and replay.item == first.item


async def test_a_node_restarted_alone_still_counts_the_cluster_it_knew(tmp_path: Path) -> None:
    """The first node of a cold whole-cluster restart must not call a write that reached only itself a quorum."""
    def node() -> Node:
        replication = GossipReplication(ReplicationConfig(push_interval_s=0.05), make_memberlist)
        return Node(ServerConfig(node_id="n0", data_dir=tmp_path), replication=replication)

    async with node() as first:
        first.replication.note_members(seen=["n1", "n2"])  # what membership reports as peers join
        assert first.replication.cluster_size() == 3
    async with node() as restarted:  # alone: nobody to join, the others are still down
        assert restarted.replication.cluster_size() == 3
        result = await restarted.update("k", Increment(amount=1), consistency=Consistency(Level.QUORUM, 100))
        assert (result.acks, result.required) == (1, 2)
        restarted.replication.note_members(gone=["n2"])  # a graceful leave takes a member out for good
    async with node() as again:
        assert again.replication.cluster_size() == 2


async def test_a_restart_draws_a_larger_epoch_even_with_a_clock_set_back(tmp_path: Path) -> None:
    """Peers retire every origin of a node id but the one with the largest epoch: a restart must never go back."""
    def node(clock_offset_ms: int) -> Node:
        replication = GossipReplication(ReplicationConfig(push_interval_s=0.05), make_memberlist)
        config = ServerConfig(node_id="n0", data_dir=tmp_path, clock_offset_ms=clock_offset_ms)
        return Node(config, replication=replication)

    epochs = []
    for offset_ms in (3_600_000, 0, -3_600_000):  # an hour ahead, then the true time, then an hour behind
        async with node(offset_ms) as started:
            assert started.replication.core is not None
            epochs.append(started.replication.core.origin[1])
    assert epochs[0] < epochs[1] < epochs[2]
