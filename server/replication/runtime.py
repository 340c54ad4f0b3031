"""`GossipReplication`: the asyncio binding of `ReplicaCore` to its node (a `ReplicaHost`) and a `gossip.Memberlist`.

It implements the `server.replication.seam.Replication` protocol, so a node becomes a cluster member by construction:

    def make_memberlist(delegate: Delegate, node_id: str) -> Memberlist:
        transport = AsyncioTransport(("127.0.0.1", 7946))
        return Memberlist(GossipConfig.lan(), node_id, transport, delegate=delegate)

    replication = GossipReplication(ReplicationConfig(seeds=(("127.0.0.1", 7947),)), make_memberlist)
    async with Node(ServerConfig(...), replication=replication) as node:
        await node.update("visits", Increment(amount=1), consistency=Consistency(Level.QUORUM))

The factory gets the node id only once storage has been opened (`Node.start` recovers it), which is why this takes a
factory rather than a memberlist. All timing lives here: one loop task runs `ReplicaCore.tick` at its deadlines,
anti-entropy sessions run one at a time as their own task (each round trip awaits the network, so serving a big
catch-up never blocks the event loop for more than one bounded message), and the delegate feeds every incoming app
message to `ReplicaCore.handle_message` and every app request to `ReplicaCore.handle_request`.

Supervision: every task here runs under the node's `server.supervisor.Supervisor`. The loop and the join are
supervised (restarted after a failure); anti-entropy sessions and other one-shot tasks handle the network's errors
themselves and report anything else; a failed tick is reported and the loop goes on. Membership's own failures
arrive through `Memberlist.on_error`. So a bug shows in the log once, in /metrics and in /health, and never as
"Task exception was never retrieved".

Joining is background work too: `start` returns at once with the node alone, and the join keeps contacting the seeds
(each attempt resolves their names again and tries every address once) with an exponential backoff until one
answers. A node whose seeds are all down still serves, and joins when they come back.

The loop never does a big state's CPU work: the core's `offload_to` sends it to the `Offloader`'s worker thread
(received states joined, big digests' blobs, diffs of big keys, see `big_merges` and `prepared`), and what stays on
the loop in bulk is done in slices bounded by time with a yield between (`loop_slices.TimeSlices`: rehashes of dirty
digests, pushed deltas). A session awaits the merges each reply started before it goes on, and a served request
before it answers.

Durability: deltas and states merged here go through the node's delta log (`ReplicaHost.merge_remote_nowait`). A
REPL (``w`` > 1) is acknowledged only once the merged delta is durable: its reply waits for the storage's commit
(`replica.ACKNOWLEDGED_WHEN_DURABLE`). Anti-entropy and push merges are logged without waiting (they are
re-fetchable from the peer if lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from rumor.crdt import CRDTError, encode
from rumor.gossip.address import format_address
from rumor.gossip.clock import Clock, MonotonicClock
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import GossipError
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.memberlist import Memberlist, RequestRefusedError
from rumor.gossip.seed_resolver import Resolver, SystemResolver, resolve_seeds
from rumor.server.errors import ServerError
from rumor.server.loop_slices import TimeSlices
from rumor.server.offload import Offloader
from rumor.server.replication.big_merges import describe
from rumor.server.replication.config import ReplicationConfig
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.member_meta import reads_bulk, reads_context_rows
from rumor.server.replication.prepared import Slot
from rumor.server.replication.quorum import Tally
from rumor.server.replication.replica import ACKNOWLEDGED_WHEN_DURABLE, ReplicaCore
from rumor.server.replication.seam import ReplicaHost
from rumor.server.replication.stored_meta import KnownMembers, next_epoch
from rumor.server.replication.stores import HostStore
from rumor.server.replication.sync import (
    BulkPacer,
    SyncInitiator,
    check_and_hash_states,
    check_states,
    is_bulk_request,
)
from rumor.server.replication.wire import (
    Kind,
    ack_message,
    is_ack,
    kind_of,
    parse_step,
    read_message,
    repl_message,
)
from rumor.server.supervisor import Supervisor

log = logging.getLogger(__name__)

MemberlistFactory = Callable[[Delegate, str], Memberlist]
_NETWORK_ERRORS = (GossipError, OSError, TimeoutError)
#: what serving a peer's request raises on purpose (malformed, a type conflict between replicas, not running, storage
#: failed; the same line `ReplicaCore._merge` draws): the peer gets the reason. Anything else is a bug here.
_REFUSALS = (ServerError, CRDTError)
#: seconds between join attempts: the first retry, and the cap the doubling stops at
JOIN_BACKOFF_INITIAL_S = 1.0
JOIN_BACKOFF_MAX_S = 30.0
#: dirty digests rehashed in one step (their stored rows read in one statement) between two looks at the clock: a
#: rehash costs 20-150 us (the key's bytes, the hash, the tree; a stored digest read first), so slices of a fixed 128
#: held the loop 15-60 ms under a write load; steps of 16 within a `TimeSlices` budget hold it about that budget
DIGEST_STEP_KEYS = 16
#: dirty digests a tick, a session's start, an OPEN or a PROBE rehashes inline (`ReplicaCore.digest_flush_keys`):
#: enough that an idle node's few are all done before it claims its vector; the rest are `_flush_digests`'
INLINE_FLUSH_KEYS = 128
#: pushed deltas merged in one step between two looks at the clock (a stream push of 60 KiB holds hundreds: slices
#: of a fixed 32 held a receiving node's loop 25-55 ms each under a cluster write load)
PUSH_STEP_ENTRIES = 8
#: local writes sealed into delta groups in one step between two looks at the clock (`_seal_in_slices`): a push
#: round's seal of the ~2,000 keys a 10k/s write load batches in 0.2 s held the loop 15-20 ms in one go
SEAL_STEP_ENTRIES = 128
#: worker processes checking a bulk walk's states (`_check_states`): the check is most of a catch-up's CPU
CHECK_WORKERS = 2
#: bulk walk replies whose states may wait to be checked and stored while the next requests are out (`sync`)
BULK_REPLIES_AHEAD = 4


class _Delegate(Delegate):
    def __init__(self, owner: GossipReplication) -> None:
        self.owner = owner

    def notify_message(self, payload: bytes, sender: str) -> None:
        core = self.owner.core
        if core is not None:
            core.handle_message(payload, sender, self.owner.clock.now())

    async def handle_request(self, payload: bytes, sender: str) -> bytes:
        try:
            return await self.owner.serve(payload, sender)
        except _REFUSALS as exc:
            raise RequestRefusedError(f"{type(exc).__name__}: {exc}") from exc

    def notify_leave(self, member: Member) -> None:
        if member.status is MemberStatus.LEFT:
            self.owner.note_members(gone=[member.id])
        self.owner.wake()

    def notify_join(self, member: Member) -> None:
        self.owner.note_members(seen=[member.id])
        self.owner.wake()


class GossipReplication:
    """``join_backoff_s`` is (first, max) delay between join attempts; ``sleep`` is what waits them (tests);
    ``resolver`` turns seed names into addresses (the system's by default; tests inject one); ``offloader`` runs the
    CPU work of big states (`ReplicaCore.offload_to`)."""

    def __init__(self, config: ReplicationConfig, memberlist_factory: MemberlistFactory, *,
                 rng: random.Random | None = None, clock: Clock | None = None,
                 join_backoff_s: tuple[float, float] = (JOIN_BACKOFF_INITIAL_S, JOIN_BACKOFF_MAX_S),
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 resolver: Resolver | None = None, offloader: Offloader | None = None) -> None:
        self.config = config
        #: where big states are decoded, joined, diffed and encoded, off the event loop (`ReplicaCore.offload_to`);
        #: benches pass ``Offloader(enabled=False)`` for the inline baseline
        self.offloader = offloader or Offloader()
        #: turns seed names into addresses on every join attempt (`gossip.seed_resolver`)
        self.resolver: Resolver = resolver or SystemResolver()
        self.clock = clock or MonotonicClock()
        self._join_backoff_s = join_backoff_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._factory = memberlist_factory
        self.delegate = _Delegate(self)
        self.core: ReplicaCore | None = None
        self.memberlist: Memberlist | None = None
        self._host: ReplicaHost | None = None
        self._supervisor: Supervisor | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[SyncInitiator | None] | None = None
        #: join attempts that failed so far, and whether one succeeded (the join task's progress, for tests)
        self.join_failures = 0
        self.joined = False
        #: every member seen that has not left (see `cluster_size`); set by `start`
        self.known_members: KnownMembers | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wakeup = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._running = False
        #: the worker process checking bulk catch-up states (`_check_states`), started at the first walk
        self._checker: ProcessPoolExecutor | None = None
        self._checker_failed = False
        #: the pace of the bulk walks we answer (`BulkPacer`): walltime, as the work it paces is
        self._bulk_pacer = BulkPacer(time.perf_counter, asyncio.sleep)
        #: what times the slices of loop work here (`loop_slices.TimeSlices`): walltime, as the loop's is; tests
        #: set a clock of their own
        self.slice_clock: Callable[[], float] = time.perf_counter
        self._checker_starting = asyncio.Lock()

    # -- lifecycle (the Replication protocol) -------------------------------------------------------------------------

    async def start(self, host: ReplicaHost) -> None:
        """Starts gossip and the loop, and returns at once: joining the seeds goes on in the background."""
        self._host = host
        self._supervisor = host.supervisor
        self.known_members = KnownMembers(host)
        self.core = ReplicaCore(host.node_id, HostStore(host), self.config, self._rng, self.clock.now(),
                                epoch=next_epoch(host), peer_reads_contexts=self.peer_reads_contexts)
        self.core.peer_reads_bulk = self.peer_reads_bulk
        self._unsubscribe = host.keyspace.subscribe(self.core.on_local)
        self.core.offload_to(self.offloader, lambda exc: self._report("replication", exc))
        self.core.digest_flush_keys = INLINE_FLUSH_KEYS  # the rest of each batch: `_flush_digests`, sliced
        self.memberlist = self._factory(self.delegate, host.node_id)
        self.memberlist.on_error = self._membership_failed
        await self.memberlist.start()
        self._running = True
        if self.config.seeds:
            self._join_task = host.supervisor.supervise("join", self._join, forever=False)
        self._loop_task = host.supervisor.supervise("replication", self._run)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        tasks = [t for t in (self._join_task, self._loop_task, self._sync_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if self.core is not None and self.core.big_merges is not None:
            self.core.big_merges.cancel()
        if self.core is not None and self.core.prepared is not None:
            self.core.prepared.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.offloader.close()
        if self._checker is not None:
            self._checker.shutdown(wait=False, cancel_futures=True)
            self._checker = None
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.memberlist is not None:
            with contextlib.suppress(*_NETWORK_ERRORS):
                await self.memberlist.leave(timeout_s=2 * self.config.push_interval_s)
            await self.memberlist.shutdown()

    def wake(self) -> None:
        self._wakeup.set()

    def _membership_failed(self, what: str, exc: BaseException) -> None:
        """`Memberlist.on_error`: a request handler that raised is this layer's bug, anything else membership's."""
        self._report("replication" if what == "delegate" else "membership", exc)

    def _report(self, component: str, exc: BaseException) -> None:
        if self._supervisor is not None:
            self._supervisor.report(component, exc)
        else:  # never started under a node: still not silent
            log.error("%s failed: %s", component, exc, exc_info=exc)

    async def _join(self) -> None:
        """Contacts the seeds until one answers: forever, each attempt further apart, up to the cap. Each attempt
        resolves the seed names again and contacts every address they have (one round of push-pulls). Alone
        meanwhile, the node serves its own reads and writes; others may still join it, which ends the loop too
        (seeds that resolve to this node alone are how the first node of a cluster starts)."""
        memberlist, seeds = self.memberlist, list(self.config.seeds)
        assert memberlist is not None
        me = memberlist.local_member.id
        delay, cap = self._join_backoff_s
        while True:
            if len(memberlist.alive_members()) > 1:
                self.joined = True
                log.info("%s: joined by another member; no need to contact the seeds", me)
                return
            resolved = await resolve_seeds(seeds, self.resolver)
            problem = resolved.describe_failures()
            targets = [a for a in resolved.addresses if a != memberlist.local_member.address]
            if targets:
                try:
                    contacted = await memberlist.join(targets, max_attempts=1)
                except _NETWORK_ERRORS as exc:
                    problem = f"{exc}; {problem}" if problem else str(exc)
                else:
                    self.joined = True
                    log.info("%s: joined the cluster (%d of %d seed address(es) answered)", me, contacted,
                             len(targets))
                    return
            elif not problem:  # the first node of a cluster, or one alone for now: waits to be joined, quietly
                log.log(logging.INFO if self.join_failures == 0 else logging.DEBUG,
                        "%s: the seeds resolve to this node only; waiting to be joined (next look in %.1f s)", me,
                        delay)
            self.join_failures += 1
            if problem:
                log.warning("%s: not joined yet: %s; next attempt in %.1f s", me, problem, delay)
            await self._sleep(delay)
            delay = min(2 * delay, cap)

    # -- queries -----------------------------------------------------------------------------------------------------

    def live_ids(self) -> list[str]:
        if self.memberlist is None or not self._running:
            return []
        return sorted(m.id for m in self.memberlist.alive_members())

    def cluster_size(self) -> int:
        """What `quorum` and `all` count against: every member this node knows of that has not left, the dead and
        the unreachable included (as Riak counts against its replica count, not against who answers): a node cut
        off with a minority can then not call a write that reached two of five a quorum. Members are remembered
        here even once membership reaps a dead one; only a graceful leave takes one out."""
        known = self.known_members
        if self.memberlist is None or not self._running or known is None:
            return 1
        members = self.memberlist.members()
        known.note(seen=[m.id for m in members if m.status is not MemberStatus.LEFT],
                   gone=[m.id for m in members if m.status is MemberStatus.LEFT])
        return max(1, len(known))

    def peer_reads_contexts(self, member_id: str) -> bool:
        """Whether that member's metadata says it reads anti-entropy context rows (`member_meta`): only then do
        our sessions with it send them. A member we do not know (yet) is taken as an older version."""
        if self.memberlist is None or not self._running:
            return False
        member = self.memberlist.member(member_id)
        return member is not None and reads_context_rows(member.meta)

    def peer_reads_bulk(self, member_id: str) -> bool:
        """Whether that member's metadata says it answers bulk walks (`member_meta.reads_bulk`)."""
        if self.memberlist is None or not self._running:
            return False
        member = self.memberlist.member(member_id)
        return member is not None and reads_bulk(member.meta)

    def note_members(self, seen: Iterable[str] = (), gone: Iterable[str] = ()) -> None:
        """Membership saw members join (``seen``) or leave for good (``gone``): see `stored_meta.KnownMembers`."""
        if self.known_members is not None:
            self.known_members.note(seen, gone)

    def members(self) -> list[dict[str, Any]]:
        if self.memberlist is None or not self._running:
            return []
        return [{"id": m.id, "address": format_address(m.address), "status": m.status.name.lower(),
                 "incarnation": m.incarnation} for m in sorted(self.memberlist.members(), key=lambda m: m.id)]

    def cluster_info(self) -> dict[str, Any]:
        """What ``GET /v1/cluster`` shows: members, this replica's replication state and counters."""
        core = self.core
        info: dict[str, Any] = {"members": self.members(), "cluster_size": self.cluster_size()}
        if core is None:
            return info
        outcome = core.last_outcome
        info.update({
            "node_id": core.node_id,
            "epoch": core.origin[1],
            "vector": {f"{o}@{e}": s for (o, e), s in sorted(core.coverage.vector().items())},
            "gc": {"tracked_entries": core.coverage.tracked_entries(), "collected": core.coverage.collected,
                   "retired": len(core.coverage.retired)},
            "dissemination": {**_as_dict(core.disseminator.stats), "backlog_bytes": core.disseminator.backlog_bytes,
                              "queued_groups": core.disseminator.queued()},
            "anti_entropy": {"syncs_started": core.stats.syncs_started, "syncs_complete": core.stats.syncs_complete,
                             "bytes": core.stats.sync_bytes, "dirty_digests": core.digests.dirty,
                             "last": None if outcome is None else _as_dict(outcome)},
            "rejected": dict(core.stats.rejected),
        })
        return info

    # -- the loop ------------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        core, memberlist = self.core, self.memberlist
        assert core is not None and memberlist is not None
        while True:  # ends by cancellation (stop): a return would be a failure to the supervisor
            try:
                await self._seal_in_slices()
            except Exception as exc:  # as for a tick: reported, and the loop goes on
                self._report("replication", exc)
            now = self.clock.now()
            try:
                result = core.tick(now, self.live_ids())
            except Exception as exc:  # a bug in one tick must not stop replication: report it and keep ticking
                self._report("replication", exc)
                result = None
            try:
                await self._flush_digests(self.config.digest_settle_s)
            except Exception as exc:  # as for a tick: reported, and the loop goes on
                self._report("replication", exc)
            if result is not None:
                for member, payload in result.pushes:
                    self._push(member, payload)
                if result.sync_with is not None and self._sync_task is None:
                    self._sync_task = self._spawn(self._sync(result.sync_with), "anti_entropy")
            delay = max(0.0, min(core.next_deadline() - self.clock.now(), self.config.push_interval_s))
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 a wait_for whose event is set as the task is cancelled
            # returns normally and swallows the cancellation, and `stop` then waited for this loop forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.001)):
                    await self._wakeup.wait()

    async def _seal_in_slices(self) -> None:
        """Seals the local writes batched since the last push round (`Disseminator.seal`) in time slices,
        `SEAL_STEP_ENTRIES` keys a step, leaving the tick fewer than that to seal."""
        core = self.core
        assert core is not None
        disseminator = core.disseminator
        slices = TimeSlices(clock=self.slice_clock)
        while len(disseminator.batch) > SEAL_STEP_ENTRIES:
            disseminator.seal(self.clock.now(), SEAL_STEP_ENTRIES)
            await slices.checkpoint()

    def _push(self, member: str, payload: bytes) -> None:
        assert self.memberlist is not None
        try:
            if len(payload) <= self.config.datagram_bytes:
                self.memberlist.send_to(member, payload)
            else:
                self._spawn(self._request_quietly(member, payload))
        except _NETWORK_ERRORS:
            return

    def spawn(self, coro: Coroutine[Any, Any, Any], component: str) -> asyncio.Task[Any]:
        """A one-shot task under the node's supervisor, for work built on this runtime (convergence probes)."""
        return self._spawn(coro, component)

    def _spawn(self, coro: Coroutine[Any, Any, Any], component: str = "replication") -> asyncio.Task[Any]:
        """A one-shot task: it handles the network's errors itself, and whatever else escapes is reported as a
        failure of `component` (so it is never "Task exception was never retrieved")."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._supervisor is not None:
            self._supervisor.watch(component, task)
        return task

    async def _request_quietly(self, member: str, payload: bytes) -> bytes | None:
        assert self.memberlist is not None
        try:
            return await self.memberlist.request(member, payload, self.config.request_timeout_s)
        except _NETWORK_ERRORS:
            return None

    async def _sync(self, peer: str) -> SyncInitiator | None:
        core, memberlist = self.core, self.memberlist
        assert core is not None and memberlist is not None
        session: SyncInitiator | None = None
        try:
            await self._flush_digests(0.0)
            session, request = core.start_sync(peer, self.clock.now())
            session.max_waiting = BULK_REPLIES_AHEAD
            message: bytes | None = request
            storing: asyncio.Future[None] | None = None  # a bulk walk's states, checked and stored beside requests
            try:
                while message is not None:
                    if storing is not None and not storing.done() and session.waiting >= BULK_REPLIES_AHEAD:
                        # the walk is that far ahead: the next request waits for one reply to be stored
                        stored = asyncio.ensure_future(session.reply_stored())
                        await asyncio.wait((storing, stored), return_when=asyncio.FIRST_COMPLETED)
                        stored.cancel()
                    if storing is not None and storing.done():
                        await storing  # a bug in it raises here
                        storing = None
                    asked = asyncio.ensure_future(memberlist.request(peer, message, self.config.request_timeout_s))
                    if storing is None and session.waiting:
                        storing = asyncio.ensure_future(session.settle(self._check_states, self.clock.now()))
                    try:
                        reply = await asked
                    finally:
                        asked.cancel()
                    slots = await self._prepare_diffs(reply)
                    try:
                        message = session.receive(reply, self.clock.now())
                    finally:
                        self._discard_diffs(slots)
                    if not await self._merges_settled(session):
                        break
                    await asyncio.sleep(0)  # let other work run between round trips
                if storing is not None:
                    await storing
                    storing = None
            finally:
                if storing is not None:
                    storing.cancel()
        except _NETWORK_ERRORS as exc:
            if session is not None:
                session.fail(f"{type(exc).__name__}: {exc}", self.clock.now())
                await self._merges_settled(session)  # what it started is not left to fail the next session
        except Exception as exc:  # a bug: the session ends as failed, and the task reports it
            if session is not None:
                session.fail(f"{type(exc).__name__}: {exc}", self.clock.now())
            raise
        finally:
            if session is not None:
                core.sync_finished(session, self.clock.now())
            self._sync_task = None
        if session is not None and session.done_message is not None:
            await self._request_quietly(peer, session.done_message)
        return session

    async def _merge_push(self, payload: bytes, sender: str) -> bytes:
        """A PUSH over a stream (bigger than a datagram: up to `max_push_bytes` of deltas), merged in time slices
        (`PUSH_STEP_ENTRIES` a step) with the loop free between; no vector is claimed until it is all merged
        (`ReplicaCore.claimable`), since the vector covers its groups from the start."""
        core = self.core
        assert core is not None
        groups = core.accept_push(payload, sender, self.clock.now())
        core.merging_pushes += 1
        entries = [entry for group in groups for entry in group.entries]
        slices = TimeSlices(clock=self.slice_clock)
        try:
            for first in range(0, len(entries), PUSH_STEP_ENTRIES):
                if first:
                    await slices.checkpoint()
                core.merge_entries(entries[first:first + PUSH_STEP_ENTRIES])
        finally:
            core.merging_pushes -= 1
        return ack_message()

    async def flush_digests(self) -> None:
        """Rehashes up to `digest_batch_keys` dirty digests, whenever marked, in slices (`_flush_digests`)."""
        await self._flush_digests(0.0)

    async def _flush_digests(self, settled_s: float) -> None:
        """Up to `digest_batch_keys` dirty digests (those dirty ``settled_s`` or longer), in time slices
        (`DIGEST_STEP_KEYS` a step) with the loop free between."""
        core = self.core
        if core is None:
            return
        left = self.config.digest_batch_keys
        slices = TimeSlices(clock=self.slice_clock)
        while left > 0 and core.digests.dirty:
            done = core.digests.flush(min(DIGEST_STEP_KEYS, left), settled_s=settled_s)
            if done == 0:
                break
            left -= done
            await slices.checkpoint()

    async def _prepare_diffs(self, message: bytes) -> list[Slot]:
        """Before a peer's STEP (request or reply) is handled: the diffs it will ask of our big keys, made off the
        loop (`prepared.PreparedDiffs`)."""
        core = self.core
        if core is None or core.prepared_diffs is None:
            return []
        try:
            if kind_of(message) is not Kind.STEP:
                return []
            ae = parse_step(message)
        except ReplicationProtocolError:  # the core refuses it, and counts it, when it handles it
            return []
        return await core.prepared_diffs.prepare(ae)

    def _discard_diffs(self, slots: list[Slot]) -> None:
        if slots and self.core is not None and self.core.prepared_diffs is not None:
            self.core.prepared_diffs.discard(slots)

    async def _merges_settled(self, session: SyncInitiator) -> bool:
        """Waits for the big merges the session's replies started (`big_merges`): False, and the session failed,
        if one failed; else a session that ended meanwhile is concluded now."""
        merges = self.core.big_merges if self.core is not None else None
        failures = await merges.drain() if merges is not None else []
        if failures:
            session.fail(describe(failures), self.clock.now())
            return False
        session.merges_settled(self.clock.now())
        return True

    async def _check_states(self, rows: list[tuple[bytes, bytes]]) -> tuple[bytes, str] | None:
        """A bulk reply's validating decode (`sync.check_states`) in a worker process, started at the first walk:
        it is most of a catch-up's CPU, and there it runs beside the loop instead of taking turns with it. A worker
        that cannot start or dies is replaced by a thread (the same check, sharing the loop's interpreter)."""
        async with self._checker_starting:  # the checks of several replies start at once: one pool for all
            if self._checker is None and not self._checker_failed:
                try:
                    checker = ProcessPoolExecutor(CHECK_WORKERS, mp_context=multiprocessing.get_context("forkserver"))
                    # From a thread: the first submit forks the workers (and the fork server, a new interpreter
                    # importing rumor), which would hold the loop for a good part of a second.
                    await asyncio.to_thread(_start_workers, checker)
                    self._checker = checker
                except (OSError, ValueError, BrokenProcessPool) as exc:
                    self._checker_failed = True
                    log.warning("bulk catch-up checks run in a thread: no worker process (%s)", exc)
        result = None
        if self._checker is not None:
            try:
                result = await asyncio.get_running_loop().run_in_executor(self._checker, check_and_hash_states, rows)
            except (BrokenProcessPool, OSError) as exc:
                self._checker.shutdown(wait=False, cancel_futures=True)
                self._checker, self._checker_failed = None, True
                log.warning("bulk catch-up checks run in a thread: the worker process failed (%s)", exc)
        if result is None:
            result = await asyncio.to_thread(check_and_hash_states, rows)
        refused, columns = result
        if refused is None and self.core is not None:  # what their install stores, made beside the check
            hashed = self.core.hashed_installs
            hashed.update((key, (blob, made)) for (key, blob), made in zip(rows, columns, strict=True))
        return refused

    # -- serving ----------------------------------------------------------------------------------------------------

    async def serve(self, payload: bytes, sender: str) -> bytes:
        """Answers a peer's request through the core (which counts what it refuses); a reply that acknowledges a
        merge goes out only once the merge is durable."""
        core, host = self.core, self._host
        if core is None or host is None:
            raise ReplicationProtocolError("not_running")
        if payload[:1] == bytes((Kind.PUSH,)):
            return await self._merge_push(payload, sender)
        if payload[:1] == bytes((Kind.OPEN,)):  # the core rehashes what is dirty before answering: most of it here
            await self._flush_digests(0.0)
        slots = await self._prepare_diffs(payload)
        bulk = is_bulk_request(payload)
        started = await self._bulk_pacer.turn() if bulk else 0.0  # a bulk walk's pace: our clients first
        try:
            reply = core.handle_request(payload, sender, self.clock.now())
        finally:
            self._discard_diffs(slots)
            if bulk:
                self._bulk_pacer.answered(started)
        merges = core.big_merges
        if merges is not None and merges.pending:  # answered once merged: the peer's DONE then claims no more
            failures = await merges.drain()
            if failures:
                raise ReplicationProtocolError("merge_failed", describe(failures))
        if kind_of(payload) in ACKNOWLEDGED_WHEN_DURABLE:
            await host.storage.flush()
        return reply

    # -- consistency levels -------------------------------------------------------------------------------------------

    async def replicate(self, key: str, type_name: str, delta: Any, needed: int, timeout_s: float) -> int:
        """Send ``delta`` to every other live member; return how many acknowledged (durably), at most ``needed``."""
        peers = [m for m in self.live_ids() if self.core is not None and m != self.core.node_id]
        if needed <= 0 or not peers:
            return 0
        payload = repl_message(key, type_name, encode(delta))
        tally = Tally(needed, len(peers))
        replies = await self._ask(peers, payload, tally, timeout_s, is_ack)
        return min(needed, sum(1 for r in replies.values() if r is not None))

    async def gather(self, key: str, needed: int, timeout_s: float) -> int:
        """Merge ``needed`` other replicas' states of ``key`` into ours, then push the result to stale repliers."""
        core = self.core
        peers = [m for m in self.live_ids() if core is not None and m != core.node_id]
        if core is None or needed <= 0 or not peers:
            return 0
        tally = Tally(needed, len(peers))
        replies = await self._ask(peers, read_message(key), tally, timeout_s, lambda _r: True)
        answered: dict[str, bytes | None] = {}
        for member, reply in replies.items():
            if reply is None:
                continue
            try:
                answered[member] = core.merge_state_reply(key, reply)
            except ReplicationProtocolError:
                continue
        for member, repair in core.repair_requests(key, answered):
            self._spawn(self._request_quietly(member, repair))
        return min(needed, len(answered))

    async def _ask(self, peers: list[str], payload: bytes, tally: Tally, timeout_s: float,
                   accept: Callable[[bytes], bool]) -> dict[str, bytes | None]:
        replies: dict[str, bytes | None] = {}
        finished = asyncio.Event()

        async def one(member: str) -> None:
            reply = await self._request_quietly(member, payload)
            ok = reply is not None and accept(reply)
            replies[member] = reply if ok else None
            if tally.record(ok):
                finished.set()

        tasks = [self._spawn(one(m)) for m in peers]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout=timeout_s)
        for task in tasks:
            if not task.done():
                task.cancel()
        return {m: r for m, r in replies.items() if r is not None}


def _start_workers(pool: ProcessPoolExecutor) -> None:
    """Have every worker of ``pool`` started (each answers one trivial call)."""
    for future in [pool.submit(check_states, []) for _ in range(CHECK_WORKERS)]:
        future.result()


def _as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


__all__ = ["GossipReplication", "HostStore", "MemberlistFactory"]
