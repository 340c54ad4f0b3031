"""`/v1/members` writes a member's address in one form whichever code lists it: a served node's (`server.cluster`)
or an embedded one's (an app made without the `Cluster`, as a program embedding a `Node` makes it, where the node's
replication lists the members). The form is `gossip.address.format_address`: IPv6 hosts in brackets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from loopback import ipv6_available

from rumor.gossip.address import parse_address
from rumor.server.cluster import Cluster
from rumor.server.config import ServerConfig
from rumor.server.http_api import create_app
from rumor.server.node import Node

pytestmark = [
    pytest.mark.integration,  # gossip over real UDP/TCP sockets, the API through aiohttp's TestServer
    pytest.mark.skipif(not ipv6_available(), reason="this host has no IPv6 loopback (::1)"),
]


async def listed(api: TestClient) -> dict[str, Any]:
    response = await api.get("/v1/members")
    assert response.status == 200
    return {member["id"]: member["address"] for member in (await response.json())["members"]}


async def test_a_served_and_an_embedded_node_show_member_addresses_in_the_same_form() -> None:
    served_config = ServerConfig(in_memory=True, node_id="served", gossip_addr="[::1]:0", timing="local")
    served_cluster = Cluster(served_config, "[::1]:7000")
    async with Node(served_config, replication=served_cluster.replication) as served:
        embedded_config = ServerConfig(in_memory=True, node_id="embedded", gossip_addr="[::1]:0", timing="local",
                                       seeds=(served_cluster.gossip_address,))
        embedded_cluster = Cluster(embedded_config, "[::1]:7001")
        async with Node(embedded_config, replication=embedded_cluster.replication) as embedded, \
                TestClient(TestServer(create_app(served, served_cluster))) as served_api, \
                TestClient(TestServer(create_app(embedded))) as embedded_api:
            async with asyncio.timeout(20):  # joining is background work; both must list both before comparing
                while not (len(await listed(served_api)) == len(await listed(embedded_api)) == 2):
                    await asyncio.sleep(0.02)
            from_served, from_embedded = await listed(served_api), await listed(embedded_api)
            assert from_served == from_embedded
            assert from_served["served"] == served_cluster.gossip_address
            assert from_served["embedded"] == embedded_cluster.gossip_address
            assert all(address.startswith("[::1]:") for address in from_served.values())
            assert parse_address(from_embedded["served"]) == served_cluster.memberlist.transport.local_address
