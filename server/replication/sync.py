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

A node far behind its peer catches up by a bulk walk (`gossip.anti_entropy.bulk`) inside the same session: states
of keys it lacks are installed as received (`ReplicaCore.install_blobs`: no decode on the event loop, one storage
transaction a reply), after a validating check the driver runs in a worker thread while its next request is out
(`SyncInitiator.settle`). The peer
paces those requests (`serving_pause_s`), so its own clients are served between them.

Pure: the caller sends each request and feeds back each reply (`SyncInitiator.receive`); timeouts and failures just
abandon the session (`fail`), which changes nothing but statistics.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rumor.gossip.anti_entropy import (
    AntiEntropyConfig,
    AntiEntropyMessageType,
    AntiEntropySession,
    CheckState,
    GetContext,
    GetState,
    GetStateForContext,
    GetStateSince,
    Install,
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

BULK_DUTY = 0.5
"""The share of a responder's time bulk requests may take: after answering one in ``t`` seconds it waits
``t * (1 - BULK_DUTY) / BULK_DUTY`` before replying, so a catching-up peer never holds its loop more than half the
time, and requests from its own clients wait behind one bounded step at most."""


def serving_pause_s(request: bytes, spent_s: float) -> float:
    """How long to hold the reply to ``request`` (a replication request that took ``spent_s`` to answer): the
    pacing of bulk walks (`BULK_DUTY`); 0 for anything else."""
    if len(request) > 1 and request[0] == Kind.STEP and request[1] == AntiEntropyMessageType.BULK:
        return spent_s * (1 - BULK_DUTY) / BULK_DUTY
    return 0.0


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
    states_installed: int = 0
    """States of keys we lacked, stored as received by a bulk walk (part of ``states_received``)."""


class SyncInitiator:
    """``get_context`` and ``get_state_for_context`` let big keys go as context rows (`gossip.anti_entropy`), sent
    only when ``peer_reads_contexts`` (the peer's member metadata says it reads them); ``install`` and
    ``check_install`` let a session far behind walk in bulk, only when ``peer_reads_bulk`` (the same way)."""

    def __init__(self, peer: str, digests: DigestIndex, coverage: Coverage, get_state: GetState, merge: Merge,
                 rng: random.Random, config: AntiEntropyConfig, reassembler: Reassembler,
                 get_state_since: GetStateSince | None = None, *, get_context: GetContext | None = None,
                 get_state_for_context: GetStateForContext | None = None, peer_reads_contexts: bool = False,
                 install: Install | None = None, check_install: CheckState | None = None,
                 peer_reads_bulk: bool = False) -> None:
        self.peer = peer
        self.coverage = coverage
        self._session = AntiEntropySession(digests.tree, get_state, merge, rng, config, reassembler=reassembler,
                                           get_state_since=get_state_since, get_context=get_context,
                                           get_state_for_context=get_state_for_context,
                                           peer_reads_contexts=peer_reads_contexts, install=install,
                                           check_install=check_install, peer_reads_bulk=peer_reads_bulk)
        self._claim = digests.dirty == 0
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
        if self.outcome is not None:  # ended by `settle`
            return None
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

    @property
    def walking(self) -> bool:
        """A bulk walk is under way: the peer's states are pouring in."""
        return self._session.walking

    async def settle(self, offload: Callable[[Callable[[], None]], Awaitable[None]], now: float) -> None:
        """Store what the last bulk reply brought, its validating check run through ``offload`` (the driver's
        worker thread: `asyncio.to_thread`). The driver calls it while its next request is out, so storing one
        batch overlaps fetching the next; a refused state ends the session here (``outcome`` set, and `receive`
        then returns None)."""
        session = self._session
        if not session.has_pending or self.outcome is not None:
            return
        check = session.pending_check()
        if check is not None:
            await offload(check)
        try:
            session.settle()
        except GossipError as exc:
            self._finish(now, f"{type(exc).__name__}: {exc}")

    def fail(self, reason: str, now: float) -> None:
        self._finish(now, reason)

    def _finish(self, now: float, error: str | None) -> None:
        if self.outcome is not None:
            return
        session = self._session
        complete = error is None and session.done and session.aborted is None and not session.incomplete
        if complete:
            if self._peer_vector is not None:
                self.coverage.raise_to(self._peer_vector, now)
            if self._claim:
                self.done_message = done_message(self._snapshot)
        stats = session.stats
        self.outcome = SyncOutcome(self.peer, complete, self.wire_sent, self.wire_received, stats.states_sent,
                                   stats.states_received, stats.rounds, error, stats.states_installed)


__all__ = ["BULK_DUTY", "SyncInitiator", "SyncOutcome", "serving_pause_s"]
