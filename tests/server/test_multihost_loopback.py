"""Clusters across hosts, on loopback: a node bound to every interface advertising one address, seeds given as a
name that resolves (through an injected resolver, no DNS) to several addresses and is resolved again on each
attempt, and the operator routes `POST /v1/cluster/join` and `/v1/cluster/force-leave`.

Loopback has a whole /8, so nodes here share one port number on 127.0.0.2, .3, ... as hosts do on a real network,
and one name can stand for all of them. Waits are event-driven (`Memberlist.wait_until`, a resolver that signals
each lookup) and bounded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import AsyncExitStack
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rumor.gossip.clock import Address
from rumor.gossip.member import MemberStatus
from rumor.gossip.seed_resolver import StaticResolver
from rumor.server.advertise import http_advertised
from rumor.server.cluster import Cluster
from rumor.server.config import ServerConfig
from rumor.server.http_api import create_app
from rumor.server.node import Node

pytestmark = pytest.mark.integration
WAIT_S = 20.0


class SignallingResolver(StaticResolver):
    """A table resolver that wakes the test at each lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up = asyncio.Event()

    async def resolve(self, host: str, port: int) -> list[Address]:
        self.looked_up.set()
        return await super().resolve(host, port)


def shared_port(hosts: list[str]) -> int:
    """A port free for UDP and TCP on each of ``hosts`` (what each "host" of the test binds)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(type=kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every test host")


async def member(stack: AsyncExitStack, node_id: str, gossip_addr: str, resolver: StaticResolver | None = None,
                 **config: Any) -> tuple[Node, Cluster]:
    """A started cluster member (stopped when ``stack`` closes) whose API host follows the advertise rules."""
    server_config = ServerConfig(in_memory=True, node_id=node_id, gossip_addr=gossip_addr, timing="local", **config)
    host = server_config.advertise_addr or gossip_addr.rpartition(":")[0]
    cluster = Cluster(server_config, http_advertised(("0.0.0.0", 7000), host, server_config.advertise_addr, None),
                      resolver=resolver)
    node = await stack.enter_async_context(Node(server_config, replication=cluster.replication))
    return node, cluster


async def wait_members(cluster: Cluster, statuses: dict[str, MemberStatus]) -> None:
    def reached() -> bool:
        seen = {m.id: m.status for m in cluster.memberlist.members()}
        return all(seen.get(name) is status for name, status in statuses.items())

    await cluster.memberlist.wait_until(reached, WAIT_S)


async def test_a_node_bound_to_every_interface_is_known_by_its_advertised_address() -> None:
    async with AsyncExitStack() as stack:
        _, wide = await member(stack, "wide", "0.0.0.0:0", advertise_addr="127.0.0.2")
        advertised = wide.gossip_address
        assert advertised.startswith("127.0.0.2:") and wide.gossip_bound_address.startswith("0.0.0.0:")
        _, peer = await member(stack, "peer", "127.0.0.3:0", seeds=(advertised,))
        await wait_members(peer, {"wide": MemberStatus.ALIVE})
        await wait_members(wide, {"peer": MemberStatus.ALIVE})
        row = next(m for m in peer.members() if m["id"] == "wide")
        assert row["gossip_addr"] == advertised  # what "wide" told, not what it bound
        assert row["http_addr"] == "127.0.0.2:7000"  # its API host follows --advertise-addr


async def test_a_seed_name_is_resolved_again_on_each_attempt_and_every_address_is_tried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rumor.server.replication.runtime")
    port = shared_port(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    resolver = SignallingResolver()
    async with AsyncExitStack() as stack:
        _, a = await member(stack, "a", f"127.0.0.2:{port}")
        await member(stack, "b", f"127.0.0.3:{port}", seeds=(f"127.0.0.2:{port}",))
        await wait_members(a, {"b": MemberStatus.ALIVE})
        _, c = await member(stack, "c", "127.0.0.5:0", resolver=resolver, seeds=(f"rumor-seeds:{port}",))
        async with asyncio.timeout(WAIT_S):
            await resolver.looked_up.wait()  # the first attempt: the name has no record yet
        # the Service gains its records: a host with no node (refuses), then the two nodes
        resolver.table["rumor-seeds"] = ["127.0.0.4", "127.0.0.2", "127.0.0.3"]
        await c.memberlist.wait_until(lambda: c.replication.joined, WAIT_S)  # re-checked on every input
        await wait_members(c, {"a": MemberStatus.ALIVE, "b": MemberStatus.ALIVE})
        assert resolver.lookups["rumor-seeds"] >= 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "c:" in r.getMessage()]
    assert warnings and f"rumor-seeds:{port}: Name or service not known" in warnings[0]
    joined = [r.getMessage() for r in caplog.records if "joined the cluster" in r.getMessage()]
    assert any("of 3 seed address(es) answered" in line for line in joined), joined


async def test_join_and_force_leave_through_the_api() -> None:
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    resolver = StaticResolver({"rumor-seeds": ["127.0.0.2"]})
    async with AsyncExitStack() as stack:
        _, a = await member(stack, "a", f"127.0.0.2:{port}")
        node_b, b = await member(stack, "b", f"127.0.0.3:{port}", resolver=resolver)
        api = await stack.enter_async_context(TestClient(TestServer(create_app(node_b, b))))
        bad = await api.post("/v1/cluster/join", json={"addresses": ["no-port"]})
        assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_address"
        unknown = await api.post("/v1/cluster/join", json={"addresses": [f"nowhere:{port}"]})
        assert unknown.status == 400 and (await unknown.json())["error"]["code"] == "unresolvable_address"
        assert "cannot resolve nowhere" in (await unknown.json())["error"]["message"]
        silent = await api.post("/v1/cluster/join", json={"addresses": [f"127.0.0.9:{port}"]})
        assert silent.status == 502 and (await silent.json())["error"]["code"] == "join_failed"
        assert f"127.0.0.9:{port}" in (await silent.json())["error"]["message"]

        joined = await api.post("/v1/cluster/join", json={"addresses": [f"rumor-seeds:{port}"]})
        assert joined.status == 200, await joined.text()
        answer = await joined.json()
        assert answer["contacted"] == 1 and answer["addresses"] == [f"127.0.0.2:{port}"]
        assert {m["id"] for m in answer["members"]} == {"a", "b"}

        alive = await api.post("/v1/cluster/force-leave", json={"node": "a"})
        assert alive.status == 409 and (await alive.json())["error"]["code"] == "member_not_dead"
        nobody = await api.post("/v1/cluster/force-leave", json={"node": "zz"})
        assert nobody.status == 404 and (await nobody.json())["error"]["code"] == "unknown_member"

        _, c = await member(stack, "c", "127.0.0.4:0", seeds=(a.gossip_address,))
        await wait_members(b, {"c": MemberStatus.ALIVE})
        assert b.replication.cluster_size() == 3
        await c.memberlist.shutdown()  # gone without a word, as a crashed host: found dead in time
        await wait_members(b, {"c": MemberStatus.DEAD})
        assert b.replication.cluster_size() == 3  # a dead member still counts for a quorum
        forced = await api.post("/v1/cluster/force-leave", json={"node": "c"})
        assert forced.status == 200, await forced.text()
        assert (await forced.json())["member"]["status"] == "left"
        assert b.replication.cluster_size() == 2
        await wait_members(a, {"c": MemberStatus.LEFT})  # the verdict spread by gossip


async def test_the_admin_routes_need_the_token_and_a_cluster_member() -> None:
    async with Node(ServerConfig(in_memory=True, node_id="solo", api_token="t0k")) as node, \
            TestClient(TestServer(create_app(node))) as api:
        for path, body in (("/v1/cluster/join", {"addresses": ["127.0.0.1:1"]}),
                           ("/v1/cluster/force-leave", {"node": "x"})):
            refused = await api.post(path, json=body)
            assert refused.status == 401
            embedded = await api.post(path, json=body, headers={"Authorization": "Bearer t0k"})
            assert embedded.status == 409 and (await embedded.json())["error"]["code"] == "not_a_cluster_member"
            malformed = await api.post(path, json={"addresses": "x", "node": 1},
                                       headers={"Authorization": "Bearer t0k"})
            assert malformed.status == 400 and (await malformed.json())["error"]["code"] == "malformed_body"
