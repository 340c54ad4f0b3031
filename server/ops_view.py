"""What an operator sees of one node: its convergence report and the dashboard's snapshots (`server.ops_http` serves
both). Kept apart from the HTTP layer so the figures can be read and tested without a server.

- `server.member_events.MemberEvents` (kept by `server.cluster`) holds the latest membership changes.
- `WriteCount` counts the local updates this node applied (subscribed to its keyspace), for writes per second.
- `OpsView.convergence` is `GET /v1/cluster/convergence` (`server.replication.convergence` on a cluster member; a
  node without a cluster is ``alone``), and `OpsView.snapshot` one frame of the dashboard's event stream.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rumor.server.node import Node

if TYPE_CHECKING:  # the single-node app never loads the memberlist
    from rumor.server.cluster import Cluster

class WriteCount:
    """Local updates applied by a node since `attach` (a keyspace listener: one integer increment per update)."""

    def __init__(self) -> None:
        self.count = 0
        self._attached = False

    def attach(self, node: Node) -> None:
        """Subscribes once the node runs (its keyspace exists only then); later calls do nothing."""
        if self._attached or not node.running:
            return
        node.keyspace.subscribe(self._count)
        self._attached = True

    def _count(self, _key: str, _type_name: str, _delta: Any, _blob: bytes | None) -> None:
        self.count += 1


class OpsView:
    """The operator's figures for ``node`` (and its ``cluster``, when it is a member of one)."""

    def __init__(self, node: Node, cluster: Cluster | None = None) -> None:
        self.node = node
        self.cluster = cluster
        self.writes = WriteCount()

    async def convergence(self) -> dict[str, Any]:
        """`GET /v1/cluster/convergence`: see `server.replication.convergence` for how it is made and trusted."""
        if self.cluster is not None:
            return await self.cluster.convergence()
        node = self.node
        return {"node": node.node_id, "verdict": "alone", "summary": "not a cluster member: nothing to converge with",
                "keys": len(node.keyspace) if node.running else 0, "root": None, "dirty_keys": None,
                "backlog_groups": 0, "backlog_bytes": 0, "peers": []}

    def members(self) -> list[dict[str, Any]]:
        if self.cluster is not None:
            return self.cluster.members()
        return [m | {"self": m["id"] == self.node.node_id} for m in self.node.members()]

    def member_events(self) -> list[dict[str, Any]]:
        return [] if self.cluster is None else self.cluster.member_events.latest()

    async def snapshot(self, writes_per_s: float | None) -> dict[str, Any]:
        """One frame of the dashboard: members, keys, write rate, convergence and the latest membership events."""
        self.writes.attach(self.node)
        node = self.node
        return {
            "t": round(time.time(), 3), "node": node.node_id, "members": self.members(),
            "keys": len(node.keyspace) if node.running else 0, "writes": self.writes.count,
            "writes_per_s": None if writes_per_s is None else round(writes_per_s, 2),
            "convergence": await self.convergence(), "events": self.member_events(),
        }


__all__ = ["OpsView", "WriteCount"]
