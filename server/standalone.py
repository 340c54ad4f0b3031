"""The replication seam of `Node`, and its single-node implementation.

`Replication` is everything `Node` asks of the layer that will spread deltas (gossip + anti-entropy) and run
membership. Deltas themselves reach that layer through `Keyspace.subscribe`; received deltas come back through
`Node.merge_remote` (which makes them durable before returning). What remains is small: how many replicas exist,
waiting for acknowledgements when a write asks for more than one (`?w=quorum|all`), collecting replies for a read
that asks for more than one (`?r=...`), membership for `/v1/members`, and a lifecycle.

`Standalone` is a cluster of one: every level is satisfied by the local node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from server.node import Node


class Replication(Protocol):
    async def start(self, node: Node) -> None:
        """Called by `Node.start` once storage is recovered and the keyspace exists (subscribe here)."""

    async def stop(self) -> None:
        """Called by `Node.stop` before storage is flushed and closed (announce leave here)."""

    def cluster_size(self) -> int:
        """Replicas, this node included, that have not left (down ones too): what `quorum` and `all` count against."""

    async def replicate(self, key: str, type_name: str, delta: Any, needed: int, timeout_s: float) -> int:
        """Sends `delta` to other nodes and returns how many acknowledged (at most `needed`) within `timeout_s`."""

    async def gather(self, key: str, needed: int, timeout_s: float) -> int:
        """Asks other nodes for `key`, merges their replies locally (via `Node.merge_remote`), returns the count."""

    def members(self) -> list[dict[str, Any]]:
        """Members as `{"id", "address", "status"}` dicts, this node included."""


class Standalone:
    """A single node: no one else to ask, every consistency level is met locally."""

    def __init__(self) -> None:
        self._node: Node | None = None

    async def start(self, node: Node) -> None:
        self._node = node

    async def stop(self) -> None:
        self._node = None

    def cluster_size(self) -> int:
        return 1

    async def replicate(self, key: str, type_name: str, delta: Any, needed: int, timeout_s: float) -> int:
        return 0

    async def gather(self, key: str, needed: int, timeout_s: float) -> int:
        return 0

    def members(self) -> list[dict[str, Any]]:
        if self._node is None:
            return []
        return [{"id": self._node.node_id, "address": self._node.config.gossip_addr, "status": "alive"}]
