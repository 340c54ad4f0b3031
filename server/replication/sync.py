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
(`SyncInitiator.settle`: the driver's worker processes, `check_states`). The peer
paces those requests (`BulkPacer`), so its own clients are served between them.

Pure: the caller sends each request and feeds back each reply (`SyncInitiator.receive`); timeouts and failures just
abandon the session (`fail`), which changes nothing but statistics.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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
    Prefetch,
    Reassembler,
)
from rumor.gossip.errors import GossipError
from rumor.server.disk_index import DigestColumns, stored_digest_columns
from rumor.server.errors import InvalidKeyError
from rumor.server.replication.coverage import Coverage
from rumor.server.replication.digests import DigestIndex
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.states import decode_state
from rumor.server.replication.wire import (
    Kind,
    Vector,
    done_message,
    kind_of,
    open_message,
    parse_open,
    parse_step,
    split_state_blob,
    step_message,
)
from rumor.server.values import check_key

BULK_DUTY = 0.5
"""The share of a responder's time bulk requests may take: after answering one in ``t`` seconds it waits
``t * (1 - BULK_DUTY) / BULK_DUTY`` before it answers the next (`BulkPacer`), so catching-up peers never hold its
loop more than half the time, and requests from its own clients wait behind one bounded step at most."""


STORE_ROWS_AT_ONCE = 100
"""States of a checked bulk reply stored in one go (`settle`): about 5 ms of the event loop at 45-50 µs a state (its
keyspace entry, digest columns, the tree, the queued write), then other work. Each round trip of the walk waits on
the loop a few times (connect, read), each time behind the part being stored: parts of 250 (10-50 ms under a
catch-up's load) gave the joiner a loop lag p99 of 98 ms, parts of 100 73 ms at the same 8k keys/s; parts of 64
cost 40% more a key (each part is a statement of disk lookups and a commit of its own)."""

CheckOffload = Callable[[list[tuple[bytes, bytes]]], Awaitable["tuple[bytes, str] | None"]]
"""Checks a bulk reply's ``(key, state blob)`` rows (`check_states`) away from the event loop; the first refused
``(key, reason)``, or None."""


def check_state_blob(key: bytes, blob: bytes) -> None:
    """What a bulk walk installs unmerged must be what a merge would have accepted: a valid key, a known type, and
    a validating decode of the state (canonical bytes of a state of that type). Raises `ReplicationProtocolError`."""
    try:
        check_key(key.decode("utf-8"))
    except (UnicodeDecodeError, InvalidKeyError):
        raise ReplicationProtocolError("bad_key", "not a valid key") from None
    type_name, data = split_state_blob(blob)
    decode_state(type_name, data)


def check_states(rows: list[tuple[bytes, bytes]]) -> tuple[bytes, str] | None:
    """`check_state_blob` over rows, for a worker process (a module-level function: it pickles by name): the first
    refused ``(key, reason)``, or None when every row passes."""
    for key, blob in rows:
        try:
            check_state_blob(key, blob)
        except ReplicationProtocolError as exc:
            return key, str(exc)
    return None


def check_and_hash_states(rows: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, str] | None, list[DigestColumns]]:
    """`check_states`, and when every row passes, the digest columns each one's install stores (`write_stored`),
    made here beside the check (a worker process that has just read each state) instead of on the event loop, where
    they were a fifth of what a catch-up's install cost a key."""
    refused = check_states(rows)
    if refused is not None:
        return refused, []
    return None, [stored_digest_columns(key.decode("utf-8"), *split_state_blob(blob)) for key, blob in rows]


def is_bulk_request(request: bytes) -> bool:
    """Whether ``request`` (a replication request) is a step of a peer's bulk walk (`BulkPacer` paces those)."""
    return len(request) > 1 and request[0] == Kind.STEP and request[1] == AntiEntropyMessageType.BULK


class BulkPacer:
    """The responder's pace for bulk walk requests, whoever sends them: an answer that took ``t`` seconds keeps the
    next one from starting for ``t * (1 - BULK_DUTY) / BULK_DUTY`` after it, so walks take at most `BULK_DUTY` of
    the loop and its own clients are served between answers. The wait is before an answer, one request at a time,
    not after it: holding each reply for the pause instead (as before) made every round trip of a walk longer by
    the pause, and let two walkers take the loop all the time between them."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]) -> None:
        self._clock = clock
        self._sleep = sleep
        self._opens_at = 0.0
        self._turn = asyncio.Lock()

    async def turn(self) -> float:
        """Wait for the gate, then hold it until `answered` (call it whether the answer succeeded or not); the
        clock's time the answer starts."""
        await self._turn.acquire()
        try:
            wait = self._opens_at - self._clock()
            if wait > 0:
                await self._sleep(wait)
        except BaseException:
            self._turn.release()
            raise
        return self._clock()

    def answered(self, started: float) -> None:
        """The answer begun at ``started`` is done: the gate opens after its share of rest, for the next one."""
        spent = self._clock() - started
        self._opens_at = started + spent + spent * (1 - BULK_DUTY) / BULK_DUTY
        self._turn.release()


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


def _none_pending() -> bool:
    return False


class SyncInitiator:
    """``get_context`` and ``get_state_for_context`` let big keys go as context rows (`gossip.anti_entropy`), sent
    only when ``peer_reads_contexts`` (the peer's member metadata says it reads them). ``merges_pending`` says
    whether received states are still being merged off the loop (`big_merges`): a session that ends meanwhile is
    concluded by the driver's `merges_settled` once they are done. ``claimable`` overrides whether our vector may
    be claimed (by default: no digest is dirty; `ReplicaCore.claimable` also waits for pushes being merged).
    ``install`` and ``check_install`` let a session far behind walk in bulk, only when ``peer_reads_bulk`` (the
    same way as context rows)."""

    def __init__(self, peer: str, digests: DigestIndex, coverage: Coverage, get_state: GetState, merge: Merge,
                 rng: random.Random, config: AntiEntropyConfig, reassembler: Reassembler,
                 get_state_since: GetStateSince | None = None, *, get_context: GetContext | None = None,
                 get_state_for_context: GetStateForContext | None = None, peer_reads_contexts: bool = False,
                 merges_pending: Callable[[], bool] = _none_pending, claimable: bool | None = None,
                 install: Install | None = None, check_install: CheckState | None = None,
                 peer_reads_bulk: bool = False, prefetch: Prefetch | None = None) -> None:
        self.peer = peer
        self._merges_pending = merges_pending
        self._ended = False
        self.coverage = coverage
        #: checks of waiting bulk replies under way (`settle`), by the reply's id
        self._checking: dict[int, tuple[Any, list[tuple[bytes, bytes]], asyncio.Future[tuple[bytes, str] | None]]] = {}
        self._session = AntiEntropySession(digests.tree, get_state, merge, rng, config, reassembler=reassembler,
                                           get_state_since=get_state_since, get_context=get_context,
                                           get_state_for_context=get_state_for_context,
                                           peer_reads_contexts=peer_reads_contexts, install=install,
                                           check_install=check_install, peer_reads_bulk=peer_reads_bulk,
                                           prefetch=prefetch)
        self._claim = digests.dirty == 0 if claimable is None else claimable
        self._snapshot: Vector = coverage.vector() if self._claim else {}
        self._peer_vector: Vector | None = None
        self.done_message: bytes | None = None
        """Set when the session completed and we may tell the peer so: the driver sends it (best effort)."""
        self.outcome: SyncOutcome | None = None
        self._reply_stored = asyncio.Event()  # set by `settle` each time it has stored a whole reply
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

    @property
    def waiting(self) -> int:
        """Bulk replies whose states wait for `settle`."""
        return self._session.waiting

    @property
    def max_waiting(self) -> int:
        """Bulk replies whose states may wait for `settle` (0, the default: each is stored as it is received)."""
        return self._session.max_waiting

    @max_waiting.setter
    def max_waiting(self, replies: int) -> None:
        self._session.max_waiting = replies

    async def settle(self, offload: CheckOffload | None, now: float) -> None:
        """Store what the bulk replies received so far brought, oldest first, each reply's validating check run by
        ``offload`` (the driver's workers: `check_states` in other processes), or here without one. Every waiting
        reply's check starts at once, so the workers check the next replies while this one is stored; the driver
        runs it beside its next requests (up to ``max_waiting`` replies ahead), so checking and storing also
        overlap fetching. A refused state ends the session here (``outcome`` set, nothing of that reply stored,
        and `receive` then returns None)."""
        session, checking = self._session, self._checking
        try:
            while session.waiting and self.outcome is None:
                if offload is not None:
                    for batch, rows in session.unchecked():
                        checking[id(batch)] = (batch, rows, asyncio.ensure_future(offload(rows)))
                oldest = session.oldest_waiting
                assert oldest is not None
                found = checking.pop(id(oldest), None)
                if found is not None:
                    session.checked(oldest, found[1], await found[2])
                while session.oldest_waiting is oldest and self.outcome is None:
                    try:
                        session.settle(oldest, max_rows=STORE_ROWS_AT_ONCE)
                    except GossipError as exc:
                        self._finish(now, f"{type(exc).__name__}: {exc}")
                    if session.oldest_waiting is oldest:
                        await asyncio.sleep(0)  # a part stored: the loop's other work goes first
                self._reply_stored.set()
        finally:
            if self.outcome is not None or not session.waiting:  # nothing left to check: drop what was started
                for _batch, _rows, check in checking.values():
                    check.cancel()
                checking.clear()

    async def reply_stored(self) -> None:
        """Returns once a running `settle` has stored one more whole reply (the driver, that many replies ahead,
        sends its next request then, instead of waiting for every waiting reply to be stored)."""
        self._reply_stored.clear()
        await self._reply_stored.wait()

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
                                   stats.states_received, stats.rounds, error, stats.states_installed)


__all__ = ["BULK_DUTY", "BulkPacer", "CheckOffload", "SyncInitiator", "SyncOutcome", "check_and_hash_states",
           "check_state_blob", "check_states", "is_bulk_request"]
