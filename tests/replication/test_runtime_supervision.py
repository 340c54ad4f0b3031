"""The replication runtime under the node's supervisor, on loopback: a failing session or handler is reported (never
"Task exception was never retrieved"), and a node whose seeds are down serves at once and keeps trying to join.

Waits are event-driven (a supervisor that signals each report, `Memberlist.wait_until`) and bounded by deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from rumor.gossip.clock import Address
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.memberlist import AppRequestError, Memberlist
from rumor.gossip.transport_asyncio import AsyncioTransport
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.runtime import GossipReplication
from rumor.server.supervisor import Supervisor
from rumor.server.updates import Increment

pytestmark = pytest.mark.integration

GOSSIP = Config.local(gossip_interval_s=0.05, join_retry_base_s=0.05, join_max_attempts=1)
WAIT_S = 5.0


class SignallingSupervisor(Supervisor):
    """A supervisor that wakes the test at every reported failure."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = asyncio.Event()

    def report(self, name: str, exc: BaseException) -> None:
        super().report(name, exc)
        self.reported.set()

    async def next_report(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.reported.wait()
        self.reported.clear()


def memberlist_on(port: int) -> Callable[[Delegate, str], Memberlist]:
    def make(delegate: Delegate, node_id: str) -> Memberlist:
        transport = AsyncioTransport(("127.0.0.1", port), None, GOSSIP.max_packet_bytes, GOSSIP.max_stream_bytes)
        return Memberlist(GOSSIP, node_id, transport, delegate=delegate)

    return make


def make_node(node_id: str, seeds: tuple[Address, ...] = (), port: int = 0, **replication: Any) -> Node:
    config = ReplicationConfig(push_interval_s=0.02, sync_interval_s=0.05, seeds=seeds)
    return Node(ServerConfig(in_memory=True, node_id=node_id), supervisor=SignallingSupervisor(),
                replication=GossipReplication(config, memberlist_on(port), **replication))


def memberlist_of(node: Node) -> Memberlist:
    replication = node.replication
    assert isinstance(replication, GossipReplication) and replication.memberlist is not None
    return replication.memberlist


def supervisor_of(node: Node) -> SignallingSupervisor:
    assert isinstance(node.supervisor, SignallingSupervisor)
    return node.supervisor


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    async with make_node("n0") as first:
        address = memberlist_of(first).transport.local_address
        async with make_node("n1", seeds=(address,)) as second:
            await memberlist_of(second).wait_until(lambda: second.replication.cluster_size() == 2, WAIT_S)
            yield first, second


async def test_a_bug_in_an_anti_entropy_session_is_reported_and_sessions_go_on() -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    async with pair() as (_first, second):
        replication = second.replication
        assert isinstance(replication, GossipReplication) and replication.core is not None

        def broken_start_sync(peer: str, now: float) -> Any:
            raise RuntimeError("session bug")

        replication.core.start_sync = broken_start_sync  # type: ignore[method-assign]
        supervisor = supervisor_of(second)
        await supervisor.next_report()
        await supervisor.next_report()  # the loop went on and started the next session
        assert supervisor.failure_counts()["anti_entropy"] >= 2
        assert supervisor.failing() == {"anti_entropy": "RuntimeError: session bug"}
        assert not second.ready
    assert unhandled == []  # nothing "never retrieved"


async def test_a_handler_bug_is_reported_as_replication_but_a_refusal_is_not() -> None:
    async with pair() as (first, second):
        replication = second.replication
        assert isinstance(replication, GossipReplication)

        # n0's own anti-entropy sessions reach the replaced handler too, so the counts are checked against calls.
        bugs: list[bytes] = []

        async def buggy(payload: bytes, sender: str) -> bytes:
            bugs.append(payload)
            raise ZeroDivisionError("handler bug")

        replication.serve = buggy  # type: ignore[method-assign]
        with pytest.raises(AppRequestError, match="handler bug"):
            await memberlist_of(first).request("n1", b"x", timeout_s=WAIT_S)
        assert supervisor_of(second).failing() == {"replication": "ZeroDivisionError: handler bug"}
        assert b"x" in bugs
        assert memberlist_of(second).stats.dropped["delegate_error"] == len(bugs)
        assert supervisor_of(second).failure_counts()["replication"] == len(bugs)
        refused: list[bytes] = []

        async def refusing(payload: bytes, sender: str) -> bytes:
            refused.append(payload)
            raise ReplicationProtocolError("malformed", "no such field")

        replication.serve = refusing  # type: ignore[method-assign]
        bugs_before = len(bugs)
        with pytest.raises(AppRequestError, match="malformed: no such field"):
            await memberlist_of(first).request("n1", b"x", timeout_s=WAIT_S)
        assert refused and len(bugs) == bugs_before
        assert supervisor_of(second).failure_counts()["replication"] == bugs_before  # a refusal is not a failure
        assert memberlist_of(second).stats.dropped["delegate_error"] == bugs_before

        memberlist = memberlist_of(second)
        real_tick = memberlist.membership.tick

        def failing_tick(now: float) -> Any:
            memberlist.membership.tick = real_tick  # type: ignore[method-assign]
            raise RuntimeError("tick bug")

        supervisor_of(second).reported.clear()
        memberlist.membership.tick = failing_tick  # type: ignore[method-assign]
        await supervisor_of(second).next_report()  # the next timer fired the failing tick, and the next ones run
        assert supervisor_of(second).failing()["membership"] == "RuntimeError: tick bug"
        assert memberlist.stats.dropped["tick_error"] == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_node_whose_seed_is_down_serves_at_once_and_joins_when_the_seed_comes_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rumor.server.replication.runtime")
    port = free_port()
    delays: list[float] = []
    third_wait = asyncio.Event()
    seed_up = asyncio.Event()

    async def backoff(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 3:
            third_wait.set()
            await seed_up.wait()
        await asyncio.sleep(0)

    lonely = make_node("lonely", seeds=(("127.0.0.1", port),), join_backoff_s=(1.0, 4.0), sleep=backoff)
    async with asyncio.timeout(2.0):
        await lonely.start()  # no seed answers, and it does not wait for one
    try:
        assert (await lonely.update("k", Increment(amount=1))).item is not None
        async with asyncio.timeout(WAIT_S):
            await third_wait.wait()
        assert delays == [1.0, 2.0, 4.0]
        assert lonely.ready  # alone is no failure
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.endswith("runtime")]
        assert len(warnings) == 3
        assert all(f"127.0.0.1:{port}" in r.getMessage() and r.exc_info is None for r in warnings)

        async with make_node("seed", port=port):
            seed_up.set()
            replication = lonely.replication
            assert isinstance(replication, GossipReplication)
            await memberlist_of(lonely).wait_until(lambda: replication.joined, WAIT_S)  # re-checked on every input
            assert lonely.replication.cluster_size() == 2
            assert any(r.levelno == logging.INFO and "joined the cluster" in r.getMessage() for r in caplog.records)
    finally:
        await lonely.stop()
