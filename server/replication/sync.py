"""One anti-entropy session with one peer: gossip's hash-tree push-pull wrapped in a vector handshake.

The tree protocol (`gossip.anti_entropy`) moves only what differs: a converged pair exchanges one HELLO and one
IN_SYNC; ``d`` differing keys cost about ``d`` states plus a few KB of hashes; big states travel as bounded chunks.
This module adds what the replication layer needs around it, in the same round trips:

- OPEN carries the initiator's per-origin vector and the HELLO; OPENED carries the responder's vector and its answer.
  Each side records the other's vector as that member's acknowledgement (`Coverage.note_ack`), which is what GC needs.
- A vector is *claimed* only if the sender's digests were fully up to date (nothing dirty) when it sent it: only then
  does "our trees agree" imply "the peer's state includes every group its vector covers".
- When the session ends complete (not aborted, not cut short), the initiator raises its vector to the responder's
  claim and sends DONE with its own claimed vector, so the responder raises too. Both states now include the other's
  state as it was at OPEN, hence every group the other's vector covered.

Pure: the caller sends each request and feeds back each reply (`SyncInitiator.receive`); timeouts and failures just
abandon the session (`fail`), which changes nothing but statistics.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from rumor.gossip.anti_entropy import (
    AntiEntropyConfig,
    AntiEntropySession,
    GetContext,
    GetState,
    GetStateForContext,
    GetStateSince,
    Merge,
    Reassembler,
)
from rumor.gossip.errors import GossipError
from rumor.server.replication.coverage import Coverage
from rumor.server.replication.digests import DigestIndex
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.wire import (
    Kind,
    Vector,
    done_message,
    kind_of,
    open_message,
    parse_open,
    parse_step,
    step_message,
)


@dataclass(slots=True)
class SyncOutcome:
    peer: str
    complete: bool
    bytes_sent: int
    bytes_received: int
    states_sent: int
    states_received: int
    rounds: int
    error: str | None = None


def _none_pending() -> bool:
    return False


class SyncInitiator:
    """``get_context`` and ``get_state_for_context`` let big keys go as context rows (`gossip.anti_entropy`), sent
    only when ``peer_reads_contexts`` (the peer's member metadata says it reads them). ``merges_pending`` says
    whether received states are still being merged off the loop (`big_merges`): a session that ends meanwhile is
    concluded by the driver's `merges_settled` once they are done. ``claimable`` overrides whether our vector may
    be claimed (by default: no digest is dirty; `ReplicaCore.claimable` also waits for pushes being merged)."""

    def __init__(self, peer: str, digests: DigestIndex, coverage: Coverage, get_state: GetState, merge: Merge,
                 rng: random.Random, config: AntiEntropyConfig, reassembler: Reassembler,
                 get_state_since: GetStateSince | None = None, *, get_context: GetContext | None = None,
                 get_state_for_context: GetStateForContext | None = None, peer_reads_contexts: bool = False,
                 merges_pending: Callable[[], bool] = _none_pending, claimable: bool | None = None) -> None:
        self.peer = peer
        self._merges_pending = merges_pending
        self._ended = False
        self.coverage = coverage
        self._session = AntiEntropySession(digests.tree, get_state, merge, rng, config, reassembler=reassembler,
                                           get_state_since=get_state_since, get_context=get_context,
                                           get_state_for_context=get_state_for_context,
                                           peer_reads_contexts=peer_reads_contexts)
        self._claim = digests.dirty == 0 if claimable is None else claimable
        self._snapshot: Vector = coverage.vector() if self._claim else {}
        self._peer_vector: Vector | None = None
        self.done_message: bytes | None = None
        """Set when the session completed and we may tell the peer so: the driver sends it (best effort)."""
        self.outcome: SyncOutcome | None = None
        self.wire_sent = 0
        self.wire_received = 0

    def open(self) -> bytes:
        coverage = self.coverage
        message = open_message(Kind.OPEN, self._session.start(), self._claim, coverage.vector(),
                               coverage.advertised_retired())
        self.wire_sent += len(message)
        return message

    def receive(self, reply: bytes, now: float) -> bytes | None:
        """Feed the peer's reply; returns the next request, or None when the session is over (see `outcome`)."""
        self.wire_received += len(reply)
        try:
            kind = kind_of(reply)
            if kind is Kind.OPENED:
                ae, claim, vector, retired = parse_open(reply, Kind.OPENED)
                self.coverage.note_ack(self.peer, vector, retired)
                self._peer_vector = vector if claim else None
            elif kind is Kind.STEP:
                ae = parse_step(reply)
            else:
                raise ReplicationProtocolError("unexpected_type", kind.name)
            inner = self._session.receive(ae)
        except (GossipError, ReplicationProtocolError) as exc:
            self._finish(now, f"{type(exc).__name__}: {exc}")
            return None
        if inner is None:
            self._finish(now, None)
            return None
        message = step_message(inner)
        self.wire_sent += len(message)
        return message

    def fail(self, reason: str, now: float) -> None:
        self._finish(now, reason)

    def merges_settled(self, now: float) -> None:
        """The driver awaited every merge the session started off the loop (`big_merges`) and none failed (else it
        calls `fail`): conclude a session that ended meanwhile. A session is never concluded complete, and so never
        raises a vector, while a merge it received is still running."""
        if self._ended and self.outcome is None:
            self._conclude(now, None)

    @property
    def settling(self) -> bool:
        """Ended, but waiting for `merges_settled` (or `fail`) to conclude."""
        return self._ended and self.outcome is None

    def _finish(self, now: float, error: str | None) -> None:
        if self.outcome is not None:
            return
        self._ended = True
        if error is None and self._merges_pending():
            return  # concluded by `merges_settled` or `fail`
        self._conclude(now, error)

    def _conclude(self, now: float, error: str | None) -> None:
        session = self._session
        complete = error is None and session.done and session.aborted is None and not session.incomplete
        if complete:
            if self._peer_vector is not None:
                self.coverage.raise_to(self._peer_vector, now)
            if self._claim:
                self.done_message = done_message(self._snapshot)
        stats = session.stats
        self.outcome = SyncOutcome(self.peer, complete, self.wire_sent, self.wire_received, stats.states_sent,
                                   stats.states_received, stats.rounds, error)


__all__ = ["SyncInitiator", "SyncOutcome"]
