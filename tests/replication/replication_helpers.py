"""Building blocks for replication tests: in-process replicas over real keyspaces, no network."""

from __future__ import annotations

import random

from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.replication import KeyspaceStore, ReplicaCore, ReplicationConfig
from rumor.server.replication.simulation import encoded_states


class Replica:
    """A keyspace plus its `ReplicaCore`, with local updates wired in as in production."""

    def __init__(self, node_id: str, config: ReplicationConfig | None = None, seed: int = 0, epoch: int = 1) -> None:
        self.ms = 1_000
        self.keyspace = Keyspace(node_id, HLCSource(lambda: self.ms))
        self.core = ReplicaCore(node_id, KeyspaceStore(self.keyspace), config or ReplicationConfig(),
                                random.Random(seed), 0.0, epoch=epoch)
        self.keyspace.subscribe(self.core.on_local)

    @property
    def id(self) -> str:
        return self.core.node_id


states = encoded_states  # byte-identical replicas compare equal
