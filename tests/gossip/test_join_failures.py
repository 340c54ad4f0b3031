"""A failed join says why, on real sockets: a wrong cluster key, a node id already alive elsewhere, nobody listening.

Every wait is bounded; a join that fails for good (keys, id) must fail at once, not after its retry schedule.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from rumor.gossip.address import format_address
from rumor.gossip.config import Config
from rumor.gossip.member import MemberStatus
from rumor.gossip.memberlist import JoinError, Memberlist, NodeIdConflictError
from rumor.gossip.security import Keyring
from rumor.gossip.transport_asyncio import AsyncioTransport, BindError

pytestmark = pytest.mark.integration

FAST = Config.lan(probe_interval_s=0.2, probe_timeout_s=0.08, gossip_interval_s=0.05, stream_timeout_s=1.0,
                  join_retry_base_s=0.1, join_max_attempts=2, push_pull_interval_s=5.0, reconnect_interval_s=5.0)
KEY = bytes(range(16))
OTHER_KEY = bytes(range(16, 32))
WAIT_S = 10.0


@asynccontextmanager
async def members(*specs: tuple[str, Keyring | None]) -> AsyncIterator[list[Memberlist]]:
    """Started, unjoined memberlists on loopback, one per (id, keyring)."""
    async with AsyncExitStack() as stack:
        started = []
        for node_id, keyring in specs:
            transport = AsyncioTransport(("127.0.0.1", 0), keyring, FAST.max_packet_bytes, FAST.max_stream_bytes)
            started.append(await stack.enter_async_context(Memberlist(FAST, node_id, transport)))
        yield started


def address(node: Memberlist) -> str:
    return format_address(node.transport.local_address)


def warnings(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and all(n in r.getMessage() for n in needles)]


async def test_a_wrong_cluster_key_fails_the_join_at_once_and_the_seed_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with members(("m0", Keyring(KEY)), ("intruder", Keyring(OTHER_KEY))) as (seed, intruder):
        with pytest.raises(JoinError) as caught:
            await asyncio.wait_for(intruder.join([seed.transport.local_address]), WAIT_S)
        assert caught.value.attempts == 1, "no retry: a key mismatch does not heal by waiting"
        assert str(caught.value) == (f"could not join through {address(seed)} after 1 attempt(s): every reply from "
                                     f"{address(seed)} failed to decrypt: check the cluster key")
        seed_side = warnings(caplog, "gossip streams from 127.0.0.1", "cluster key differs")
        assert len(seed_side) == 2, "one from the seed (the request), one from the intruder (the answer)"
        with pytest.raises(JoinError):
            await asyncio.wait_for(intruder.join([seed.transport.local_address]), WAIT_S)
        assert len(warnings(caplog, "gossip streams from 127.0.0.1")) == 2, "at most one a minute per peer"
        assert seed.stats.transport.dropped["decrypt_no_matching_key"] == 2
        assert [m.id for m in seed.members()] == ["m0"]


@pytest.mark.parametrize("sealed_seed", [True, False])
async def test_one_side_without_a_key_is_named_in_the_join_error(sealed_seed: bool) -> None:
    keyrings = (Keyring(KEY), None) if sealed_seed else (None, Keyring(KEY))
    async with members(("m0", keyrings[0]), ("m1", keyrings[1])) as (seed, joiner):
        with pytest.raises(JoinError) as caught:
            await asyncio.wait_for(joiner.join([seed.transport.local_address]), WAIT_S)
        why = "answers encrypted but this node has no cluster key" if sealed_seed else \
            "answers unencrypted but this node has a cluster key"
        assert str(caught.value).endswith(f"{address(seed)} {why}: check the cluster key")
        assert caught.value.attempts == 1


async def test_a_node_id_alive_elsewhere_is_refused_by_the_node_joined_through(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with members(("m0", None), ("m1", None), ("m1", None)) as (first, holder, twin):
        await holder.join([first.transport.local_address])
        for through in (first, holder):
            with pytest.raises(NodeIdConflictError) as caught:
                await asyncio.wait_for(twin.join([through.transport.local_address]), WAIT_S)
            assert str(caught.value) == (f"node id m1 is already in use by {address(holder)}; "
                                         "give this node another node id")
            assert isinstance(caught.value, JoinError) and caught.value.holder == holder.transport.local_address
        refused = warnings(caplog, f"refused a join from {address(twin)}: node id m1 is already in use by "
                                   f"{address(holder)}")
        assert [line.split(":")[0] for line in refused] == ["m0", "m1"], "each node it tried warned"
        member = first.member("m1")
        assert member is not None and member.address == holder.transport.local_address
        assert member.status is MemberStatus.ALIVE and holder.local_member.incarnation == 0
        assert [m.id for m in twin.members()] == ["m1"]


async def test_a_seed_nobody_listens_on_is_named_with_the_reason() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with members(("m0", None)) as (node,):
        with pytest.raises(JoinError) as caught:
            await asyncio.wait_for(node.join([("127.0.0.1", port)]), WAIT_S)
        assert caught.value.attempts == FAST.join_max_attempts
        assert f"after 2 attempt(s): 127.0.0.1:{port}: connect failed" in str(caught.value)


async def test_a_gossip_port_in_use_is_a_bind_error_with_the_reason() -> None:
    async with members(("m0", None)) as (node,):
        taken = node.transport.local_address
        transport = AsyncioTransport(taken)
        with pytest.raises(BindError) as caught:
            await transport.start(lambda _data, _addr: None, _no_requests)
        assert caught.value.addr == taken and caught.value.reason == "address already in use"
        await transport.close()


async def _no_requests(_data: bytes, _addr: tuple[str, int]) -> bytes:
    raise AssertionError("not reached")
