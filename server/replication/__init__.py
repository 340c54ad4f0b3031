"""Replication of the keyspace between nodes: delta dissemination, anti-entropy, causal-metadata GC, w/r levels.

Layering (each module is one concept; the pure ones take ``now`` and a ``random.Random`` and never read a clock):

- `wire`: the messages this layer puts on gossip's application channel (type byte + msgpack, append-only types).
- `digests`: per-key digests in gossip's hash tree, kept current lazily (dirty keys rehashed in bounded batches).
- `coverage`: which delta groups this replica holds (per-origin vectors), dedupe, and membership-driven GC of them.
- `disseminator`: batched delta groups pushed each interval to a few random live members, forwarded epidemically.
- `states`: checking a received CRDT state, and making what a peer lacks of ours (from its state or its context).
- `sync`: one anti-entropy session (gossip's push-pull hash-tree protocol) plus the vector handshake around it.
- `member_meta`: what a node says it reads in its member metadata (so sessions send context rows only to peers
  that read them), and reading a peer's.
- `quorum`: when to stop waiting for acknowledgements at ``w``/``r`` levels.
- `replica`: `ReplicaCore`, the pure replica tying the above to a `Store`; drivers call ``tick``/``handle_*``.
- `big_merges`, `prepared`: a big state's CPU work (decoding and joining a received one, encoding ours for its
  digest, diffing ours against a peer's context) on `server.offload`'s worker thread, off the event loop; a driver
  with a loop turns them on (`ReplicaCore.offload_to`), the simulator and in-process pairs work inline.
- `seam`: what a node asks of replication (`Replication`), what replication asks of a node (`ReplicaHost`), and
  the cluster of one (`Standalone`).
- `stored_meta`: what replication keeps in the data directory (known members, the last epoch).
- `runtime`: the asyncio binding (`GossipReplication`) of the core to a `ReplicaHost` and a `gossip.Memberlist`.
- `simulation`: the same core on gossip's in-memory `Simulation` (virtual time, seeded faults).
"""

from rumor.server.replication.config import ReplicationConfig
from rumor.server.replication.errors import ReplicationError, ReplicationProtocolError
from rumor.server.replication.replica import KeyspaceStore, ReplicaCore, Store

__all__ = [
    "KeyspaceStore",
    "ReplicaCore",
    "ReplicationConfig",
    "ReplicationError",
    "ReplicationProtocolError",
    "Store",
]
