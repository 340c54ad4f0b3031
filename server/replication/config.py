"""`ReplicationConfig`: every knob of the replication layer in one documented, validated, frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rumor.gossip.clock import Address
from rumor.server.replication.errors import ReplicationConfigError


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    push_interval_s: float = 0.2
    """Delta groups are pushed once per interval (gossip's ``gossip_interval_s`` is the natural value)."""
    fanout: int = 3
    """Random live members each push round goes to."""
    transmit_mult: int = 2
    """A group is pushed in ``transmit_mult * ceil(log10(N + 1))`` rounds by each node that holds it (at least 2).
    With fanout 3 that reaches every node of 50 with overwhelming probability; anti-entropy covers the rest."""
    max_push_bytes: int = 60 * 1024
    """Upper bound on one push message (a stream frame when it does not fit a datagram)."""
    datagram_bytes: int = 1200
    """Push messages up to this size go as a best-effort datagram (fits gossip's 1400-byte packet with headers)."""
    max_backlog_bytes: int = 4 * 1024 * 1024
    """Queued push bytes above this are dropped (oldest first) and left to anti-entropy: no unbounded buffers."""
    sync_interval_s: float = 2.0
    """Anti-entropy: one push-pull session with one random live member per interval."""
    sync_message_bytes: int = 60 * 1024
    """Largest anti-entropy message (framing of the 64 KiB stream limit left aside)."""
    sync_hash_bytes: int = 3
    """Hash slice width on the anti-entropy wire (see gossip.anti_entropy)."""
    sync_max_rounds: int = 400
    """Round trips per session; a longer catch-up continues in the next session."""
    digest_batch_keys: int = 2000
    """Dirty keys rehashed per flush (bounded work: a huge backlog of changes never stalls the event loop)."""
    digest_settle_s: float = 2.0
    """The background rehash (each tick) takes a changed key once it has been dirty this long; sessions flush all
    as they start, so the default is the session interval. A key under constant writes is re-encoded once per
    period, not once per push interval (that cost as much as the writes' own encoding). A digest this stale only
    makes a peer's session see a difference that is about to be pushed anyway."""
    request_timeout_s: float = 5.0
    """Timeout of one anti-entropy or replication request."""
    gc_grace_s: float = 30.0
    """A departed member's origins become GC candidates this long after it was last seen alive."""
    dedupe_window: int = 4096
    """Delta-group ids remembered above each origin's contiguous prefix (older ones count as seen)."""
    max_reassembly_bytes: int = 256 * 1024 * 1024
    """Memory bound for large states arriving in chunks (gossip.anti_entropy.Reassembler)."""
    seeds: tuple[Address, ...] = field(default=())
    """Gossip addresses the runtime joins at start (empty: first node of a new cluster)."""

    def __post_init__(self) -> None:
        positive_floats = ("push_interval_s", "sync_interval_s", "request_timeout_s", "digest_settle_s")
        for name in positive_floats:
            if not getattr(self, name) > 0:
                raise ReplicationConfigError(name, getattr(self, name), "must be > 0")
        for name in ("fanout", "transmit_mult", "digest_batch_keys", "sync_max_rounds"):
            if getattr(self, name) < 1:
                raise ReplicationConfigError(name, getattr(self, name), "must be >= 1")
        if not 1024 <= self.max_push_bytes <= 64 * 1024:
            raise ReplicationConfigError("max_push_bytes", self.max_push_bytes, "must be in 1 KiB..64 KiB")
        if not 2048 <= self.sync_message_bytes <= 64 * 1024:
            raise ReplicationConfigError("sync_message_bytes", self.sync_message_bytes, "must be in 2 KiB..64 KiB")
        if self.max_backlog_bytes < self.max_push_bytes:
            raise ReplicationConfigError("max_backlog_bytes", self.max_backlog_bytes, "must be >= max_push_bytes")
        if self.dedupe_window < 16:
            raise ReplicationConfigError("dedupe_window", self.dedupe_window, "must be >= 16")
        if self.gc_grace_s < 0:
            raise ReplicationConfigError("gc_grace_s", self.gc_grace_s, "must be >= 0")

    def transmits(self, cluster_size: int) -> int:
        """Rounds in which each node pushes a group it holds (memberlist's retransmit formula, floor 2)."""
        return max(2, self.transmit_mult * math.ceil(math.log10(cluster_size + 1)))
