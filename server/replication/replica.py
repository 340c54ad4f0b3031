"""`ReplicaCore`: one replica's whole replication logic as a pure object, shared by the simulator and the runtime.

A driver (the asyncio `runtime.GossipReplication`, or `simulation.ReplicaApp` on gossip's virtual-time simulator)
does only I/O: it calls `tick(now, live)` each interval and sends what it returns, hands every app datagram to
`handle_message` and every app request to `handle_request`, and runs the anti-entropy sessions `tick` asks for with
`start_sync`. The core never reads a clock, never draws global randomness, never touches a socket. Every input is
checked here, so whatever a peer sends that is refused is counted in `CoreStats.rejected`, by reason.

It reaches the data through a `Store` (`stores`: key -> (API type name, CRDT state), plus a synchronous `merge`): a
`KeyspaceStore` over `server.keyspace.Keyspace` for tests and the simulator, the runtime's `HostStore` in production
(which also makes merges durable). Local deltas enter through `on_local` (the driver subscribes it to the
keyspace), so local and received deltas take the same dissemination path.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rumor.crdt import CRDTError, encode
from rumor.gossip.anti_entropy import (
    AntiEntropyConfig,
    AntiEntropyMessageType,
    AntiEntropyProtocolError,
    AntiEntropyResponder,
    Reassembler,
    should_walk,
)
from rumor.gossip.anti_entropy.wire import Exchange, Hello, decode_message, encode_message
from rumor.gossip.errors import GossipError
from rumor.server.disk_index import DigestColumns
from rumor.server.errors import InvalidKeyError, ServerError
from rumor.server.offload import ChangeCounter, Offloader
from rumor.server.replication.big_merges import BigMerge, BigMergeResult, OffloadedMerges
from rumor.server.replication.config import ReplicationConfig
from rumor.server.replication.coverage import Coverage
from rumor.server.replication.digests import DEFERRED, Deferred
from rumor.server.replication.disseminator import Disseminator
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.prepared import PreparedBlobs, PreparedDiffs, Slot
from rumor.server.replication.probe import RANGE_LEVEL, ProbeAnswer, parse_probe, probed_message
from rumor.server.replication.states import (
    context_of,
    decode_state,
    diff_for,
    diff_for_context,
    is_bottom,
    read_context,
)
from rumor.server.replication.stores import KeyspaceStore, Store
from rumor.server.replication.sync import SyncInitiator, SyncOutcome, check_state_blob
from rumor.server.replication.wire import (
    DeltaEntry,
    DeltaGroup,
    Kind,
    OriginKey,
    ack_message,
    kind_of,
    open_message,
    parse_done,
    parse_open,
    parse_read,
    parse_repl,
    parse_state,
    parse_step,
    repl_message,
    split_state_blob,
    state_blob,
    state_message,
    step_message,
    unpack_push,
)
from rumor.server.values import TYPES

CATCHING_UP = encode_message(AntiEntropyMessageType.ERROR, {"reason": "catching_up"})
"""What a replica walking in bulk answers a peer's OPEN with: the peer's session ends (failed, nothing changed) and
its next one, once the walk is over, finds little left to do."""

ACKNOWLEDGED_WHEN_DURABLE = frozenset({Kind.REPL})
"""Requests whose reply says the merge is durable (what ``w`` > 1 counts): a driver over durable storage sends their
reply only once its store has committed what `handle_request` merged."""


@dataclass(slots=True)
class TickResult:
    pushes: list[tuple[str, bytes]] = field(default_factory=list)
    sync_with: str | None = None


@dataclass(slots=True)
class CoreStats:
    deltas_merged: int = 0
    states_merged: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    syncs_started: int = 0
    syncs_complete: int = 0
    sync_bytes: int = 0
    requests_served: int = 0
    states_installed: int = 0
    """States of keys this replica lacked, stored as received by bulk walks (`install_blobs`)."""
    bottoms_skipped: int = 0
    """Received empty states of keys held here, not merged (`states.is_bottom`)."""


def _nobody(_peer: str) -> bool:
    return False


class ReplicaCore:
    """``peer_reads_contexts(member id)`` says whether that peer reads anti-entropy context rows (the driver knows
    from its member metadata, `member_meta.reads_context_rows`); by default no peer is known to, and sessions we
    start send none (what we answer follows each request: see `gossip.anti_entropy.session`)."""

    def __init__(self, node_id: str, store: Store, config: ReplicationConfig, rng: random.Random, now: float,
                 epoch: int, peer_reads_contexts: Callable[[str], bool] = _nobody) -> None:
        self.node_id = node_id
        self.peer_reads_contexts = peer_reads_contexts
        #: whether a member reads bulk walks (`member_meta.reads_bulk`); the driver sets it, like the above
        self.peer_reads_bulk: Callable[[str], bool] = _nobody
        self.store = store
        self.config = config
        self.rng = rng
        self.origin: OriginKey = (node_id, epoch)
        self.stats = CoreStats()
        self.coverage = Coverage(self.origin, now, config.dedupe_window)
        self.disseminator = Disseminator(node_id, self.origin, config, self.coverage)
        self.digests = store.digest_index(self.digest_blob)
        self.ae_config = AntiEntropyConfig(max_message_bytes=config.sync_message_bytes,
                                           hash_bytes=config.sync_hash_bytes, max_rounds=config.sync_max_rounds)
        # One budget for chunked states in flight, whichever role receives them (our session, a peer's session):
        # ``max_reassembly_bytes`` bounds this replica's memory, not each role's. Transfer ids are content hashes
        # bound to their key, so the roles can share completed and partial transfers safely.
        self.reassembler = Reassembler(max_buffer_bytes=config.max_reassembly_bytes)
        self.responder = AntiEntropyResponder(self.digests.tree, self.get_blob, self.merge_blob, self.ae_config,
                                              reassembler=self.reassembler, get_state_since=self.get_blob_since,
                                              get_context=self.get_blob_context,
                                              get_state_for_context=self.get_blob_for_context,
                                              get_states=self.get_blobs, prefetch=self.prefetch_blobs)
        self.next_sync_at = now + rng.uniform(0, config.sync_interval_s)
        self.syncing: SyncInitiator | None = None
        self.last_outcome: SyncOutcome | None = None
        self.last_exchange: dict[str, float] = {}
        """member id -> `now` of the last complete anti-entropy session with it, whichever side started it."""
        self.digest_flush_keys = config.digest_batch_keys
        """Dirty keys rehashed inline by a tick, a session's start, an OPEN or a PROBE: a driver that rehashes the
        rest in slices between them, yielding to its loop, lowers it (see `runtime.INLINE_FLUSH_KEYS`)."""
        self.changes = ChangeCounter()
        """Every change of a key this core sees (local updates, merges) is counted here: how an off-loop join tells
        that its key changed meanwhile (`big_merges`)."""
        self.prepared: PreparedBlobs | None = None
        """Set by a driver with an event loop (`offload_to`): big keys' blobs are encoded off the loop (`prepared`)."""
        self.hashed_installs: dict[bytes, tuple[bytes, DigestColumns]] = {}
        """Digest columns of checked bulk rows (key -> (blob, columns)), made with their check (`runtime`)."""
        self.big_merges: OffloadedMerges | None = None
        """Set by `offload_to`: received states of the offloader's ``min_bytes`` and more are joined off the loop
        (`big_merges`); None joins everything inline (the simulator, in-process pairs)."""
        self.prepared_diffs: PreparedDiffs | None = None
        """Set by `offload_to`: diffs of big keys made off the loop before a peer's message needs them."""
        self.merging_pushes = 0
        """Pushes a driver is merging in slices (`accept_push`, `merge_entries`): no vector is claimed meanwhile."""

    # -- the store, as anti-entropy sees it ------------------------------------------------------------------------

    def encode_key(self, key: str) -> bytes | None:
        prepared = self.prepared.blob(key) if self.prepared is not None else None
        if prepared is not None:
            return prepared
        held = self.store.encoded(key)
        return None if held is None else state_blob(*held)

    def digest_blob(self, key: str) -> bytes | Deferred | None:
        """`encode_key` for the digests: a big decoded state is encoded off the loop, the key's digest waiting
        (`digests.DEFERRED`) until its blob is ready (see `prepared`)."""
        prepared = self.prepared
        if prepared is None:
            return self.encode_key(key)
        blob = prepared.blob(key)
        if blob is not None:
            return blob
        if prepared.encoding(key):
            return DEFERRED
        if prepared.offloader.wants(self.digests.tree.size_of(key.encode("utf-8"))) and not self.store.cold(key):
            held = self.store.get(key)
            if held is None:
                return None
            prepared.start(key, held[0], held[1])
            return DEFERRED
        return self.encode_key(key)

    def get_blob(self, key: bytes) -> bytes | None:
        return self.encode_key(key.decode("utf-8"))

    def get_blobs(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """`get_blob` of many keys (a bulk walk's reply): the cold ones read from the store in one batch."""
        found: dict[bytes, bytes] = {}
        names: list[str] = []
        prepared = self.prepared
        for key in keys:
            blob = prepared.blob(key.decode("utf-8")) if prepared is not None else None
            if blob is None:
                names.append(key.decode("utf-8"))
            else:
                found[key] = blob
        for name, held in self.store.encoded_many(names).items():
            found[name.encode("utf-8")] = state_blob(*held)
        return found

    def get_blob_since(self, key: bytes, peer_blob: bytes) -> bytes | None:
        """A pushback's state: the peer just sent ``peer_blob`` of ``key`` and holds at least that, so what it
        lacks of ours (`diff_for`) brings it to our merged state."""
        if self.prepared_diffs is not None:
            ready = self.prepared_diffs.take(("state", key.decode("utf-8", "replace"), peer_blob))
            if ready is not None:
                return ready
        held = self.store.get(key.decode("utf-8"))
        if held is None:
            return None
        return self._blob_since(held, peer_blob)

    @staticmethod
    def _blob_since(held: tuple[str, Any], peer_blob: bytes) -> bytes:
        type_name, state = held
        try:
            peer_type, data = split_state_blob(peer_blob)
        except ReplicationProtocolError:
            return state_blob(type_name, encode(state))
        return state_blob(type_name, diff_for(type_name, state, data) if peer_type == type_name else encode(state))

    def _held(self, key: bytes) -> tuple[str, Any] | None:
        """The store's entry for a key a peer named (any bytes: one that is not UTF-8 is no key of ours)."""
        try:
            return self.store.get(key.decode("utf-8"))
        except UnicodeDecodeError:
            return None

    def get_blob_context(self, key: bytes) -> bytes | None:
        """Our causal context of ``key`` (an anti-entropy context row: a few counters where the state may be
        megabytes), or None if we do not hold the key."""
        held = self._held(key)
        return None if held is None else context_of(held[1])

    def get_blob_for_context(self, key: bytes, context: bytes) -> bytes | None:
        """What a peer holding ``context`` of ``key`` lacks of ours, as a state blob (`diff_for_context`), or None
        if we do not hold the key. A garbled context (checked first, whether we hold the key or not) raises
        `ReplicationProtocolError`, which anti-entropy counts and answers with an ERROR; nothing changes."""
        peer_context = read_context(context)
        if self.prepared_diffs is not None:
            ready = self.prepared_diffs.take(("context", key.decode("utf-8", "replace"), context))
            if ready is not None:
                return ready
        held = self._held(key)
        return None if held is None else state_blob(held[0], diff_for_context(held[1], peer_context))

    def big_state(self, key: str) -> tuple[str, Any] | None:
        """(type name, state) of ``key`` if it is big (its last digest says so) and decoded, else None: what
        `prepared.PreparedDiffs` works on off the loop."""
        prepared = self.prepared
        if prepared is None or not prepared.offloader.wants(self.digests.tree.size_of(key.encode("utf-8"))):
            return None
        if self.store.cold(key):
            return None
        return self.store.get(key)

    def peer_diff_slots(self, ae: bytes) -> list[Slot]:
        """The diffs a peer's anti-entropy message will ask of us (`prepared.PreparedDiffs`): a context row
        answered with a diff, a pushed state answered with a pushback. Unreadable: none (the engine refuses it)."""
        try:
            kind, body = decode_message(ae, self.ae_config.max_message_bytes)
            if kind != AntiEntropyMessageType.EXCHANGE:
                return []
            ex = Exchange.parse(body, self.digests.tree, self.ae_config.hash_bytes)
        except GossipError:
            return []
        slots: list[Slot] = []
        for key, context, _answer in ex.contexts:
            if context:
                slots.append(("context", key.decode("utf-8", "replace"), context))
        for key, state, pushback in ex.states:
            if pushback:
                slots.append(("state", key.decode("utf-8", "replace"), state))
        return slots

    @classmethod
    def diff_off_loop(cls, slot: Slot, held: tuple[str, Any]) -> bytes:
        """The worker's part of a prepared diff (pure: reads ``held``'s state, makes new bytes)."""
        what, _key, peer = slot
        if what == "context":
            return state_blob(held[0], diff_for_context(held[1], read_context(peer)))
        return cls._blob_since(held, peer)

    def merge_blob(self, key_bytes: bytes, blob: bytes) -> None:
        try:
            key = key_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise ReplicationProtocolError("bad_key", "not UTF-8") from None
        type_name, data = split_state_blob(blob)
        big_merges = self.big_merges
        if big_merges is not None and big_merges.wants(len(data)):
            big_merges.submit(self.plan_big_merge(key, type_name, data))
            return
        state = decode_state(type_name, data)
        fresh = self.store.get(key) is None
        if not self._merge(key, type_name, state, data):
            return
        self.stats.states_merged += 1
        # A key we did not have now holds exactly the received state: its blob is the one we got.
        if fresh:
            self.digests.set_blob(key, blob)
        elif self.prepared is not None and self.prepared.offloader.wants(self.digests.tree.size_of(key_bytes)):
            self.digests.mark(key)  # a big state: encoded off the loop for its digest (`prepared`), not here
        else:
            merged = self.encode_key(key)
            if merged is not None:
                self.digests.set_blob(key, merged)

    def offload_to(self, offloader: Offloader, report: Callable[[BaseException], None]) -> None:
        """Big states' CPU work goes to ``offloader`` from now on (a driver with a running event loop calls this):
        received states joined there (`big_merges`), digests' blobs and peers' diffs made there (`prepared`).
        ``report(exc)`` hears of failures that are bugs."""
        self.big_merges = OffloadedMerges(self, offloader, report)
        self.prepared = PreparedBlobs(offloader, self.changes, state_blob, self.digests.set_blob, report)
        self.prepared_diffs = PreparedDiffs(offloader, self.changes, self.big_state, self.peer_diff_slots,
                                            ReplicaCore.diff_off_loop)

    def _merges_pending(self) -> bool:
        return self.big_merges is not None and self.big_merges.pending > 0

    def plan_big_merge(self, key: str, type_name: str, data: bytes) -> BigMerge:
        """What the worker needs to join a received big state (see `big_merges`), taken on the loop without decoding
        or encoding anything big: raises `ReplicationProtocolError` at once when the type name is unknown or is not
        the key's (as the inline merge would), and changes nothing."""
        if type_name not in TYPES:
            raise ReplicationProtocolError("unknown_type_name", type_name)
        store = self.store
        if store.cold(key):
            held = store.encoded(key)
            assert held is not None
            return self._big_merge_plan(key, type_name, data, held[0], held[1], None)
        current = store.get(key)
        if current is None:
            return BigMerge(key, type_name, data, None, None)
        if self.big_merges is None or not self.big_merges.wants(self.digests.tree.size_of(key.encode("utf-8"))):
            return self._big_merge_plan(key, type_name, data, current[0], encode(current[1]), None)
        return self._big_merge_plan(key, type_name, data, current[0], None, context_of(current[1]))

    @staticmethod
    def _big_merge_plan(key: str, type_name: str, data: bytes, held_type: str, ours: bytes | None,
                        context: bytes | None) -> BigMerge:
        if held_type != type_name:
            raise ReplicationProtocolError("merge_refused", f"TypeConflictError: {key!r} is a {held_type}, "
                                                            f"not a {type_name}"[:200])
        return BigMerge(key, type_name, data, ours, context)

    def finish_big_merge(self, job: BigMerge, result: BigMergeResult, *, unchanged: bool) -> None:
        """The loop's part of a big merge (see `big_merges`): adopt the worker's join if the key did not change
        meanwhile, else merge it (or the worker's diff) like any received state."""
        key, type_name = job.key, job.type_name
        if job.adopt and unchanged:
            try:
                self.store.adopt(key, type_name, result.state, job.data)
            except (ServerError, CRDTError) as exc:
                raise ReplicationProtocolError("merge_refused", f"{type(exc).__name__}: {exc}"[:200]) from None
            self.changes.changed(key)
            self.digests.set_blob(key, state_blob(type_name, result.blob))
        else:
            if self._merge(key, type_name, result.state, result.blob):
                self.digests.mark(key)
        self.stats.states_merged += 1

    def _merge(self, key: str, type_name: str, state: Any, blob: bytes | None = None) -> bool:
        """Join a received state or delta into ``key``; False when it is the bottom of the key's own type
        (`states.is_bottom`): nothing to join, so the key is not changed, nor its digest marked (callers skip that
        too). A bottom of a key we lack still makes the key, as any merge does, and a conflicting type is refused."""
        if blob is not None and is_bottom(type_name, blob) and self.store.type_of(key) == type_name:
            self.stats.bottoms_skipped += 1
            return False
        self.changes.changed(key)
        try:
            self.store.merge(key, type_name, state, blob)
        except InvalidKeyError as exc:  # no client could have written it: a forged or garbled message
            raise ReplicationProtocolError("bad_key", exc.reason) from None
        except (ServerError, CRDTError) as exc:  # type conflict between replicas: count, keep ours
            raise ReplicationProtocolError("merge_refused", f"{type(exc).__name__}: {exc}"[:200]) from None
        return True

    # -- local changes ----------------------------------------------------------------------------------------------

    def on_local(self, key: str, type_name: str, delta: Any, blob: bytes | None = None) -> None:
        """Subscribed to the keyspace's local updates: join into this interval's batch and mark the digest stale."""
        self.disseminator.record_local(key, type_name, delta, blob)
        self.digests.mark(key)
        self.changes.changed(key)

    def on_changed(self, key: str) -> None:
        self.digests.mark(key)

    # -- timers -------------------------------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        return min(self.disseminator.next_push_at, self.next_sync_at)

    def tick(self, now: float, live: list[str]) -> TickResult:
        """Push round, bounded digest flush, GC, and whether to start an anti-entropy session (and with whom)."""
        result = TickResult()
        live_set = set(live)
        if self.disseminator.due(now):
            result.pushes = self.disseminator.tick(now, live, self.rng)
            self.digests.advance(now)
            self.digests.flush(self.digest_flush_keys, settled_s=self.config.digest_settle_s)
            self.coverage.observe_live(live_set, now)
            self.coverage.collect(live_set, now, self.config.gc_grace_s)
        peers = [m for m in live if m != self.node_id]
        if self.disseminator.sync_wanted and self.syncing is None:
            self.disseminator.sync_wanted = False
            self.next_sync_at = min(self.next_sync_at, now)
        if now >= self.next_sync_at:
            self.next_sync_at = now + self.config.sync_interval_s
            if peers and self.syncing is None:  # one session at a time; a slow one just skips its turn
                result.sync_with = self.rng.choice(sorted(peers))
        return result

    def start_sync(self, peer: str, now: float, *, peer_reads_contexts: bool | None = None,
                   peer_reads_bulk: bool | None = None) -> tuple[SyncInitiator, bytes]:
        """Begin a session with ``peer``: flush digests (bounded) first, so claims are possible when idle.
        ``peer_reads_contexts`` and ``peer_reads_bulk`` override what the driver says of the peer (in-process
        pairs)."""
        self.digests.flush(self.digest_flush_keys)
        contexts = self.peer_reads_contexts(peer) if peer_reads_contexts is None else peer_reads_contexts
        bulk = self.peer_reads_bulk(peer) if peer_reads_bulk is None else peer_reads_bulk
        session = SyncInitiator(peer, self.digests, self.coverage, self.get_blob, self.merge_blob, self.rng,
                                self.ae_config, self.reassembler, self.get_blob_since,
                                get_context=self.get_blob_context, get_state_for_context=self.get_blob_for_context,
                                peer_reads_contexts=contexts, merges_pending=self._merges_pending,
                                claimable=self.claimable(), install=self.install_blobs,
                                check_install=self.check_blob, peer_reads_bulk=bulk, prefetch=self.prefetch_blobs)
        self.syncing = session
        self.stats.syncs_started += 1
        return session, session.open()

    def sync_finished(self, session: SyncInitiator, now: float | None = None) -> None:
        """``now`` dates a complete session in `last_exchange` (drivers pass it; without it, it is not dated)."""
        if self.syncing is session:
            self.syncing = None
            self.hashed_installs.clear()
        outcome = session.outcome
        self.last_outcome = outcome
        if outcome is not None:
            self.stats.sync_bytes += outcome.bytes_sent + outcome.bytes_received
            if outcome.complete:
                self.stats.syncs_complete += 1
                if now is not None:
                    self.last_exchange[session.peer] = now

    # -- incoming -----------------------------------------------------------------------------------------------------

    def handle_message(self, payload: bytes, sender: str, now: float) -> None:
        """An app datagram (or a one-way stream message): pushes and DONE."""
        try:
            kind = kind_of(payload)
            if kind is Kind.PUSH:
                self.merge_groups(self.disseminator.receive(unpack_push(payload), sender, now))
            elif kind is Kind.DONE:
                self._done(payload, sender, now)
            else:
                raise ReplicationProtocolError("unexpected_type", kind.name)
        except ReplicationProtocolError as exc:
            self._reject(exc.reason)

    def claimable(self) -> bool:
        """Whether our vector may be claimed now (see `sync`): no digest is dirty, and no push whose groups the
        vector already covers is still being merged (a driver may merge a big push in slices: `merging_pushes`)."""
        return self.digests.dirty == 0 and not self.merging_pushes

    def accept_push(self, payload: bytes, sender: str, now: float) -> list[DeltaGroup]:
        """A PUSH's first half, for a driver that merges its groups itself (`merge_entries`, in slices): the groups
        new to us. A garbled push is counted in `stats.rejected` and yields none."""
        self.stats.requests_served += 1
        try:
            return self.disseminator.receive(unpack_push(payload), sender, now)
        except ReplicationProtocolError as exc:
            self._reject(exc.reason)
            return []

    def merge_groups(self, groups: list[DeltaGroup]) -> None:
        for group in groups:
            self.merge_entries(group.entries)

    def merge_entries(self, entries: Iterable[DeltaEntry]) -> None:
        """Merge pushed deltas (each refused one is counted and skipped), the cold keys among them read in one batch
        first (a point read a key was a tenth of a receiving node's loop under a cluster write load)."""
        entries = list(entries)
        self.store.prefetch([entry.key for entry in entries if type(entry.key) is str])
        for entry in entries:
            try:
                state = decode_state(entry.type_name, entry.delta)
                merged = self._merge(entry.key, entry.type_name, state, entry.delta)
            except ReplicationProtocolError as exc:
                self._reject(exc.reason)
                continue
            if merged:
                self.digests.mark(entry.key)
                self.stats.deltas_merged += 1

    def _done(self, payload: bytes, sender: str, now: float) -> None:
        vector = parse_done(payload)
        self.last_exchange[sender] = now
        self.coverage.note_ack(sender, vector, [])
        self.coverage.raise_to(vector, now)

    def handle_request(self, payload: bytes, sender: str, now: float) -> bytes:
        """An app request: anti-entropy steps, REPL (merge + ack), READ, PUSH and DONE over a stream.

        Bad input (garbled, of an unknown type, or a state that conflicts with ours) is counted in `stats.rejected`
        and raises `ReplicationProtocolError`; it changes nothing. See `ACKNOWLEDGED_WHEN_DURABLE` for when the
        reply may be sent."""
        self.stats.requests_served += 1
        try:
            kind = kind_of(payload)
            if kind is Kind.OPEN:
                ae, _claim, vector, retired = parse_open(payload, Kind.OPEN)
                self.coverage.note_ack(sender, vector, retired)
                if (self.syncing is not None and self.syncing.walking) or self._would_walk(ae, sender):
                    # catching up in bulk (now, or at once: our next session): a session of another's would only
                    # send the same keys slowly
                    self.next_sync_at = min(self.next_sync_at, now)
                    return open_message(Kind.OPENED, CATCHING_UP, False, self.coverage.vector(), [])
                self.digests.flush(self.digest_flush_keys)
                claim = self.claimable()
                reply = self.responder.handle(ae)
                return open_message(Kind.OPENED, reply, claim, self.coverage.vector(),
                                    self.coverage.advertised_retired())
            if kind is Kind.STEP:
                return step_message(self.responder.handle(parse_step(payload)))
            if kind is Kind.DONE:
                self._done(payload, sender, now)
                return ack_message()
            if kind is Kind.REPL:
                key, type_name, delta = parse_repl(payload)
                if self._merge(key, type_name, decode_state(type_name, delta), delta):
                    self.digests.mark(key)
                return ack_message()
            if kind is Kind.READ:
                return self.state_reply(parse_read(payload))
            if kind is Kind.PUSH:
                self.handle_message(payload, sender, now)
                return ack_message()
            if kind is Kind.PROBE:
                return probed_message(self.probe_answer(*parse_probe(payload), now))
            raise ReplicationProtocolError("unexpected_type", kind.name)
        except ReplicationProtocolError as exc:
            self._reject(exc.reason)
            raise

    def probe_answer(self, epoch: int, seq: int, now: float) -> ProbeAnswer:
        """Where this replica stands now (`server.replication.probe`), for a peer that holds groups 1..``seq`` of
        our origin's ``epoch``. Stale digests are rehashed first (bounded), as for a session's OPEN."""
        self.digests.flush(self.digest_flush_keys)
        disseminator = self.disseminator
        held = seq if epoch == self.origin[1] else 0
        return ProbeAnswer(root=self.digests.tree.root(), ranges=self.range_hashes(), dirty=self.digests.dirty,
                           keys=len(self.digests.tree), backlog_groups=disseminator.queued(),
                           backlog_bytes=disseminator.backlog_bytes, unsealed_keys=len(disseminator.batch),
                           oldest_unheld_age_s=disseminator.group_age_after(held, now))

    def range_hashes(self) -> bytes:
        """The hash tree's level-`RANGE_LEVEL` node hashes, concatenated: one per key range."""
        tree = self.digests.tree
        level = min(RANGE_LEVEL, tree.depth)
        return b"".join(tree.node(level, i) for i in range(tree.level_size(level)))

    def _reject(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1

    def reject(self, reason: str) -> None:
        """Count a refusal found outside `handle_request` (a big merge that failed off the loop)."""
        self._reject(reason)

    # -- w / r levels ---------------------------------------------------------------------------------------------

    def state_reply(self, key: str) -> bytes:
        held = self.store.get(key)
        if held is None:
            return state_message(None)
        data = encode(held[1])
        if len(data) + len(held[0]) + 64 > self.config.sync_message_bytes:
            raise ReplicationProtocolError("state_too_large", f"{len(data)} bytes; anti-entropy carries it")
        return state_message((held[0], data))

    def merge_state_reply(self, key: str, payload: bytes) -> bytes | None:
        """Merge a READ answer; returns the replier's encoded state (None if it had nothing) for read repair."""
        held = parse_state(payload)
        if held is None:
            return None
        type_name, data = held
        if self._merge(key, type_name, decode_state(type_name, data), data):
            self.digests.mark(key)
        return data

    def repair_requests(self, key: str, replies: dict[str, bytes | None]) -> list[tuple[str, bytes]]:
        """Read repair: REPL to every replier whose state differs from our merged one what it lacks of it (its
        whole state to one that had none), when that fits one message."""
        held = self.store.get(key)
        if held is None:
            return []
        type_name, state = held
        merged = encode(state)
        requests = []
        for member, theirs in sorted(replies.items()):
            if theirs == merged:
                continue
            diff = merged if theirs is None else diff_for(type_name, state, theirs)
            if len(diff) + len(key) + 64 <= self.config.sync_message_bytes:
                requests.append((member, repl_message(key, type_name, diff)))
        return requests


    # -- bulk catch-up (`sync`) --------------------------------------------------------------------------------------

    def check_blob(self, key_bytes: bytes, blob: bytes) -> None:
        """What a bulk walk installs unmerged is checked as a merge would check it (`sync.check_state_blob`)."""
        check_state_blob(key_bytes, blob)

    def _would_walk(self, hello: bytes, sender: str) -> bool:
        """Whether a session of ours with ``sender`` (whose HELLO this is) would walk in bulk: it reads walks and
        holds far more keys than we do (counting keys whose digests are not built yet)."""
        if not self.peer_reads_bulk(sender):
            return False
        try:
            kind, body = decode_message(hello, self.ae_config.max_message_bytes)
            peer_keys = Hello.parse(body).key_count if kind == AntiEntropyMessageType.HELLO else 0
        except AntiEntropyProtocolError:
            return False  # the responder refuses it as ever
        return should_walk(len(self.digests.tree) + self.digests.dirty, peer_keys)

    def prefetch_blobs(self, keys: list[bytes]) -> None:
        """Merges of these keys follow (an anti-entropy message's states): the cold ones are read in one batch."""
        names = []
        for key in keys:
            try:
                names.append(key.decode("utf-8"))
            except UnicodeDecodeError:
                continue  # refused by its merge
        self.store.prefetch(names)

    def install_blobs(self, rows: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Store checked states of keys we lack as they are (`Store.install`: one storage batch) and record their
        digests; returns the rows whose key the store held after all (the session merges those). A store without
        ``install`` holds everything: every row is merged."""
        install = getattr(self.store, "install", None)
        if install is None:
            return rows
        parsed = [(key.decode("utf-8"), *split_state_blob(blob)) for key, blob in rows]
        hashed = self.hashed_installs
        columns = {name: made[1] for (name, _, _), (key, blob) in zip(parsed, rows, strict=True)
                   if (made := hashed.pop(key, None)) is not None and made[0] == blob}
        installed = {row[0] for row in install(parsed, columns)}
        records = getattr(self.store, "install_records_digests", False)  # else the tree learns them here
        held: list[tuple[bytes, bytes]] = []
        for (key, _type_name, _data), (key_bytes, blob) in zip(parsed, rows, strict=True):
            if key not in installed:
                held.append((key_bytes, blob))
            elif not records:
                self.digests.set_blob(key, blob)
        self.stats.states_installed += len(installed)
        return held


def sync_pair(initiator: ReplicaCore, responder: ReplicaCore, now: float,
              observe: Callable[[bytes], None] | None = None, contexts: bool = True,
              bulk: bool = False) -> SyncInitiator:
    """Run one whole session between two in-process cores (tests, benches, local catch-up); ``observe`` sees
    every message both ways. Returns the finished session (see ``outcome``). Both run this code, so each reads
    context rows; ``contexts=False`` runs the session as with a peer not known to (an older version); ``bulk``
    lets a far-behind initiator walk in bulk."""
    session, request = initiator.start_sync(responder.node_id, now, peer_reads_contexts=contexts,
                                            peer_reads_bulk=bulk)
    message: bytes | None = request
    while message is not None:
        if observe is not None:
            observe(message)
        reply = responder.handle_request(message, initiator.node_id, now)
        if observe is not None:
            observe(reply)
        message = session.receive(reply, now)
    initiator.sync_finished(session, now)
    if session.done_message is not None:
        if observe is not None:
            observe(session.done_message)
        responder.handle_request(session.done_message, initiator.node_id, now)
    return session


__all__ = ["CoreStats", "KeyspaceStore", "ReplicaCore", "Store", "TickResult", "decode_state", "sync_pair"]
