"""The seam between a node and replication, both ways, and its single-node side.

- `Replication` is everything `server.node.Node` asks of the layer that spreads deltas and runs membership:
  how many replicas exist, waiting for acknowledgements when a write asks for more than one (``?w=quorum|all``),
  collecting replies for a read that asks for more than one (``?r=...``), membership for ``/v1/members``, and a
  lifecycle. `server.replication.runtime.GossipReplication` is the cluster implementation.
- `ReplicaHost` is everything replication uses of its node; `Node` is one. So neither this module nor the runtime
  imports `server.node`: the node depends on replication, never the other way round.
- `Standalone` is a cluster of one: every level is satisfied by the local node.

Local deltas reach replication through `Keyspace.subscribe`; received ones go back through
`ReplicaHost.merge_remote_nowait`, which applies and logs them (the caller waits on `Storage.flush` where an
acknowledgement promises durability).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from rumor.server.config import ServerConfig
from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.storage import Storage
from rumor.server.supervisor import Supervisor


class ReplicaHost(Protocol):
    """What replication uses of the node it runs in (read-only: replication never replaces any of these)."""

    @property
    def node_id(self) -> str: ...

    @property
    def config(self) -> ServerConfig:
        """Its ``gossip_addr`` is what a lone node shows as its address."""

    @property
    def running(self) -> bool: ...

    @property
    def keyspace(self) -> Keyspace:
        """Read for anti-entropy and READs; subscribed to for local deltas."""

    @property
    def supervisor(self) -> Supervisor:
        """Runs replication's background tasks: a failure is logged, counted and shown in ``/health``."""

    @property
    def stored_meta(self) -> Mapping[str, str]:
        """The data directory's named values as found at start (replication keeps its own there too)."""

    @property
    def storage(self) -> Storage:
        """Where replication keeps its named values (`Storage.put_meta`) and waits for durability (`Storage.flush`)."""

    @property
    def hlc(self) -> HLCSource:
        """The node's clock: a new process's epoch starts at its physical time."""

    def merge_remote_nowait(self, key: str, type_name: str, state_or_delta: Any, blob: bytes | None = None) -> None:
        """Joins a received delta or state into ``key`` and queues it for the log (without waiting for the commit)."""

    def adopt_remote_nowait(self, key: str, type_name: str, joined: Any, blob: bytes) -> None:
        """Install ``joined``, the join of ``key``'s state as it is and a received state (``blob``: its bytes, what
        the log keeps), made off the event loop: `merge_remote_nowait` of that state without the merge's cost."""


class Replication(Protocol):
    async def start(self, host: ReplicaHost) -> None:
        """Called by `Node.start` once storage is recovered and the keyspace exists (subscribe here)."""

    async def stop(self) -> None:
        """Called by `Node.stop` before storage is flushed and closed (announce leave here)."""

    def cluster_size(self) -> int:
        """Replicas, this node included, that have not left (down ones too): what `quorum` and `all` count against."""

    async def replicate(self, key: str, type_name: str, delta: Any, needed: int, timeout_s: float) -> int:
        """Sends `delta` to other nodes and returns how many acknowledged (at most `needed`) within `timeout_s`."""

    async def gather(self, key: str, needed: int, timeout_s: float) -> int:
        """Asks other nodes for `key`, merges their replies into the host's keyspace, returns how many answered."""

    def members(self) -> list[dict[str, Any]]:
        """Members as `{"id", "address", "status"}` dicts, this node included."""


class Standalone:
    """A single node: no one else to ask, every consistency level is met locally."""

    def __init__(self) -> None:
        self._host: ReplicaHost | None = None

    async def start(self, host: ReplicaHost) -> None:
        self._host = host

    async def stop(self) -> None:
        self._host = None

    def cluster_size(self) -> int:
        return 1

    async def replicate(self, key: str, type_name: str, delta: Any, needed: int, timeout_s: float) -> int:
        return 0

    async def gather(self, key: str, needed: int, timeout_s: float) -> int:
        return 0

    def members(self) -> list[dict[str, Any]]:
        if self._host is None:
            return []
        return [{"id": self._host.node_id, "address": self._host.config.gossip_addr, "status": "alive"}]


__all__ = ["ReplicaHost", "Replication", "Standalone"]
