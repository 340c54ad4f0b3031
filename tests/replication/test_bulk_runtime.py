"""A fresh node joining over real loopback sockets catches up by a bulk walk when its peer's member metadata says the
peer reads BULK (its states checked in worker processes, installed unmerged), and by the descent when it does not
(an older peer): either way it ends holding exactly the peer's states."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import msgpack
import pytest
from test_runtime_loopback import make_memberlist, wait_for

from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.member_meta import advertised
from rumor.server.replication.runtime import GossipReplication
from rumor.server.updates import Increment, RegisterWrite, SetChange

pytestmark = pytest.mark.integration

KEYS = 2500
OLDER_META = msgpack.packb({"reads": ["ae-cx", "cv-probe"]})  # what the release before bulk walks published


def _node(name: str, meta: bytes, seeds: tuple[tuple[str, int], ...] = (), data_dir: Path | None = None) -> Node:
    replication = GossipReplication(ReplicationConfig(push_interval_s=0.05, sync_interval_s=0.3, seeds=seeds),
                                    lambda delegate, node_id: make_memberlist(delegate, node_id, meta=meta))
    config = ServerConfig(in_memory=True, node_id=name) if data_dir is None else ServerConfig(data_dir=data_dir,
                                                                                               node_id=name)
    return Node(config, replication=replication)


def _states(node: Node) -> dict[str, bytes]:
    return {key: node.keyspace.encoded_state(key) for key in node.keyspace}


@pytest.mark.parametrize("serving_meta", [msgpack.packb(advertised()), OLDER_META], ids=["reads_bulk", "older"])
async def test_a_fresh_node_catches_up_with_a_peer(serving_meta: bytes, tmp_path: Path) -> None:
    async with _node("serving", serving_meta, data_dir=tmp_path) as loading:  # restarted below: no delta left to push
        for i in range(KEYS):
            update = [Increment(amount=1), SetChange(add=(f"e{i}",)), RegisterWrite(value=f"v{i}")][i % 3]
            await loading.update(f"k{i:05d}", update)
    async with AsyncExitStack() as stack:
        serving = await stack.enter_async_context(_node("serving", serving_meta, data_dir=tmp_path))
        assert serving.replication.memberlist is not None
        seed = serving.replication.memberlist.transport.local_address
        fresh = await stack.enter_async_context(_node("fresh", msgpack.packb(advertised()), (seed,)))
        await wait_for(lambda: len(fresh.keyspace) == KEYS, 60.0)
        await wait_for(lambda: fresh.replication.core is not None and fresh.replication.core.syncing is None, 30.0)
        assert _states(fresh) == _states(serving)
        core = fresh.replication.core
        assert core is not None
        walked = core.stats.states_installed
        assert (walked > KEYS // 2) if serving_meta != OLDER_META else walked == 0
        assert fresh.replication.cluster_info()["rejected"] == {}
        await asyncio.sleep(0)
