"""A running node refuses what a peer sends that it cannot accept, counts it where every refusal is counted, and
changes nothing; what it accepts with an acknowledgement is durable before the acknowledgement leaves.

REPL requests take the same path as every other kind (`ReplicaCore.handle_request`), so a garbled REPL, one of an
unknown type byte, or one whose type conflicts with the key's is counted in the core's ``rejected`` like any other
refusal. The memberlist counts the refusal too, and `/metrics` shows it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from rumor.crdt import ORSet, PNCounter, encode
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.memberlist import AppRequestError, Memberlist, RequestRefusedError
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.cluster import Cluster
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.runtime import GossipReplication
from rumor.server.replication.simulation import encoded_states
from rumor.server.replication.wire import is_ack, repl_message
from rumor.server.updates import Increment

pytestmark = pytest.mark.integration

GOSSIP = Config.local(gossip_interval_s=0.05)
WAIT_S = 5.0

#: (name, the REPL a peer sends to a node holding the counter "visits", the reason the core counts)
REFUSED_REPLS: list[tuple[str, bytes, str]] = [
    ("garbled delta", repl_message("visits", "counter", b"\x93\x01garbage"), "bad_state"),
    ("unknown type byte", b"\x7f" + repl_message("visits", "counter", encode(PNCounter()))[1:], "unknown_type"),
    ("type conflict", repl_message("visits", "set", encode(ORSet().add("peer", "x"))), "merge_refused"),
]


def make_memberlist(delegate: Delegate, node_id: str) -> Memberlist:
    transport = AsyncioTransport(("127.0.0.1", 0), None, GOSSIP.max_packet_bytes, GOSSIP.max_stream_bytes)
    return Memberlist(GOSSIP, node_id, transport, delegate=delegate)


def replication_of(node: Node) -> GossipReplication:
    replication = node.replication
    assert isinstance(replication, GossipReplication) and replication.core is not None
    return replication


@asynccontextmanager
async def node_holding_a_counter(data_dir: Path | None = None) -> AsyncIterator[Node]:
    config = ServerConfig(node_id="n0", in_memory=True) if data_dir is None else ServerConfig(node_id="n0",
                                                                                             data_dir=data_dir)
    async with Node(config, replication=GossipReplication(ReplicationConfig(), make_memberlist)) as node:
        await node.update("visits", Increment(amount=3))
        yield node


@pytest.mark.parametrize(("name", "payload", "reason"), REFUSED_REPLS, ids=[r[0] for r in REFUSED_REPLS])
async def test_a_refused_repl_is_counted_by_the_core_and_changes_nothing(name: str, payload: bytes,
                                                                         reason: str) -> None:
    async with node_holding_a_counter() as node:
        replication = replication_of(node)
        before = encoded_states(node.keyspace)
        with pytest.raises(RequestRefusedError):
            await replication.delegate.handle_request(payload, "peer")
        assert replication.core is not None and replication.core.stats.rejected == {reason: 1}
        assert encoded_states(node.keyspace) == before


async def test_an_accepted_repl_is_acknowledged_once_it_is_durable(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async with node_holding_a_counter(tmp_path) as node:
        flushes: list[bool] = []
        real_flush = node.storage.flush

        async def observed_flush() -> None:
            await real_flush()
            flushes.append(node.storage.healthy)

        monkeypatch.setattr(node.storage, "flush", observed_flush)
        delta = PNCounter().increment("peer", 4)
        reply = await replication_of(node).delegate.handle_request(repl_message("visits", "counter", encode(delta)),
                                                                   "peer")
        assert is_ack(reply) and flushes == [True]
        item = node.keyspace.item("visits")
        assert item is not None and item.value == 7


async def test_a_refusal_over_the_network_is_counted_by_the_memberlist_and_shown_in_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ServerConfig(node_id="n0", in_memory=True, gossip_addr="127.0.0.1:0", timing="local")
    cluster = Cluster(config, http_addr="127.0.0.1:0")
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Node(config, replication=cluster.replication))
        cluster.bind_metrics(node.metrics)
        await node.update("visits", Increment(amount=3))
        asking = await stack.enter_async_context(make_memberlist(Delegate(), "asking"))
        await asking.join([cluster.memberlist.transport.local_address])
        for _name, payload, _reason in REFUSED_REPLS:
            with pytest.raises(AppRequestError):
                await asking.request("n0", payload, timeout_s=WAIT_S)
        assert cluster.memberlist.stats.dropped["request_refused"] == len(REFUSED_REPLS)
        assert 'rumor_gossip_dropped_packets_total{reason="request_refused"} 3' in node.metrics.render()
        core = replication_of(node).core
        assert core is not None and sum(core.stats.rejected.values()) == len(REFUSED_REPLS)
        rendered = node.metrics.render()
        for reason, n in core.stats.rejected.items():
            assert f'rumor_replication_rejected_total{{reason="{reason}"}} {n}' in rendered
    warned = [r for r in caplog.records if r.name == "rumor.gossip.memberlist" and "refused an app request" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING  # at most one a minute per requester
