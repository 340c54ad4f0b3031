"""What an operator sees of one node: its convergence report and the dashboard's snapshots (`server.ops_http` serves
both). Kept apart from the HTTP layer so the figures can be read and tested without a server.

- `MemberEvents` keeps the latest membership changes this node saw (a member joined, became suspect, dead, alive
  again, left), each stamped with the wall-clock time it was seen; `server.cluster` feeds it from the memberlist.
- `WriteCount` counts the local updates this node applied (subscribed to its keyspace), for writes per second.
- `OpsView.convergence` is `GET /v1/cluster/convergence` (`server.replication.convergence` on a cluster member; a
  node without a cluster is ``alone``), and `OpsView.snapshot` one frame of the dashboard's event stream.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server.node import Node

if TYPE_CHECKING:  # the single-node app never loads the gossip stack
    from gossip.member import Member
    from server.cluster import Cluster

MEMBER_EVENTS_KEPT = 200
"""Membership changes remembered per node (the dashboard shows the latest)."""
EVENTS_PER_SNAPSHOT = 30


class MemberEvents:
    """The latest membership changes, oldest first; ``wall_clock`` stamps them (injected by tests)."""

    def __init__(self, node_id: Callable[[], str], kept: int = MEMBER_EVENTS_KEPT,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._node_id = node_id
        self._events: deque[dict[str, Any]] = deque(maxlen=kept)
        self._wall_clock = wall_clock
        self.seen = 0

    def record(self, old: Member | None, new: Member) -> None:
        """A memberlist listener: only changes of status (or a new member) are events; a refreshed entry is not."""
        if old is not None and old.status is new.status:
            return
        self.seen += 1
        self._events.append({
            "seq": self.seen, "t": round(self._wall_clock(), 3), "member": new.id,
            "status": new.status.name.lower(), "was": None if old is None else old.status.name.lower(),
            "incarnation": new.incarnation, "self": new.id == self._node_id(),
        })

    def latest(self, count: int = EVENTS_PER_SNAPSHOT) -> list[dict[str, Any]]:
        return list(self._events)[-count:]


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


__all__ = ["MemberEvents", "OpsView", "WriteCount"]
