"""The SWIM + Lifeguard membership state machine: pure, clock-free, and driven from outside.

How a driver runs it (the asyncio `Memberlist` and the simulator both do exactly this):

* Create ``Membership(config, node_id, address, rng, now)``; optionally ``join(seeds, now)``.
* Call ``tick(now)`` whenever ``now >= next_deadline()`` (calling it early is harmless; the deadline may be
  ``math.inf`` after a leave, when nothing is left to do, and may lie in the past, meaning "now").
* For every datagram received: ``receive(data, sender_address, now)``. It raises `PacketDecodeError` (and changes
  nothing) for garbage: drop the packet and count ``exc.reason``.
* For every incoming stream request: ``receive_stream(data, sender_address, now)`` returns a `StreamReply`. Send back
  ``reply`` if set. If ``app_request`` is set, await ``delegate.handle_request(payload, source)`` and send back
  ``messages.encode_app_response(result)`` (or ``messages.encode_app_error(str(exc))`` if it raised).
* Every method returns a list of `Outgoing`: send each `Packet` as a datagram; for each `StreamRequest` call
  ``Transport.request(address, data, timeout_s)`` and report the outcome with
  ``stream_response(request_id, reply_or_None, now)`` (None on any failure or timeout).
* After any of these calls ``next_deadline()`` may have moved; re-arm the timer.

Nothing here reads a clock, draws global randomness or does I/O, so a whole cluster runs in virtual time.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from gossip.awareness import Awareness
from gossip.broadcast_queue import PART_OVERHEAD, BroadcastQueue, fill_packet
from gossip.clock import Address
from gossip.config import Config, push_pull_scale, suspicion_timeout_s
from gossip.delegate import Delegate
from gossip.errors import PacketDecodeError, PacketTooLargeError, UnknownMemberError
from gossip.id_conflict import ConflictingClaim, claim_holder, sender_holder
from gossip.joining import Join
from gossip.member import Member, MemberStatus
from gossip.messages import (
    Ack,
    Alive,
    AppMessage,
    AppRequest,
    Dead,
    IdConflict,
    IndirectPing,
    Left,
    Message,
    Nack,
    Ping,
    PushPull,
    RemoteState,
    Suspect,
    UserBroadcast,
    decode_packet,
    decode_stream,
    encode,
    encode_within,
)
from gossip.outgoing import JoinStatus, MembershipStats, Outgoing, Packet, StreamReply, StreamRequest
from gossip.probe_order import ProbeOrder
from gossip.suspicion import Suspicion

__all__ = ["JoinStatus", "Membership", "MembershipStats", "Outgoing", "Packet", "StreamReply", "StreamRequest"]



@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    incarnation: int
    phase: str  # "direct" -> "indirect" -> "await_stream"
    deadline: float
    expected_nacks: int = 0
    nacks: int = 0
    stream_pending: bool = False


@dataclass(slots=True)
class _Relay:
    requester: Address
    seq: int
    nack: bool
    deadline: float


class Membership:
    """One node's view of the cluster and its SWIM + Lifeguard protocol; see the module docstring for driving it.

    ``rng`` is the only source of randomness (probe order, gossip targets, relays, staggering); ``meta`` is small
    opaque metadata every member sees; ``incarnation`` lets a restarted node start above what it used before.
    """

    def __init__(self, config: Config, node_id: str, address: Address, rng: random.Random, now: float,
                 delegate: Delegate | None = None, meta: bytes = b"", incarnation: int = 0) -> None:
        if len(meta) > config.max_meta_bytes:
            raise PacketTooLargeError(len(meta), config.max_meta_bytes)
        self.config = config
        self.id = node_id
        self._rng = rng
        self._delegate = delegate or Delegate()
        # Skip building empty gossip packets when nobody could fill them (most ticks of an idle cluster).
        self._delegate_broadcasts = getattr(type(self._delegate), "get_broadcasts", None) is not Delegate.get_broadcasts
        self._members: dict[str, Member] = {node_id: Member(node_id, address, incarnation, MemberStatus.ALIVE,
                                                            meta, now)}
        self._peers: list[str] = []  # non-gone members except us, for O(1) random picks
        self._peer_index: dict[str, int] = {}
        self._gone: dict[str, None] = {}  # dead or left (a dict, not a set: iteration order must be reproducible)
        self._suspicions: dict[str, Suspicion] = {}
        self._probe_order = ProbeOrder(rng)
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._queue = BroadcastQueue(config.retransmit_mult)
        self._seq = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._streams: dict[int, tuple[str, object]] = {}
        self._join: Join | None = None
        self._left = False
        self._user_overhead = len(encode(UserBroadcast(node_id, b""))) + 1 + PART_OVERHEAD
        self.stats = MembershipStats()
        self.observer: Callable[[Member | None, Member], None] | None = None
        """Called with (old, new) on every change to a member entry: for simulators and metrics, not for apps."""
        self.on_conflict: Callable[[ConflictingClaim], None] | None = None
        """Called for every refused claim to a node id alive elsewhere (`gossip.id_conflict`): the driver logs it."""
        stagger = rng.random()
        self._next_probe_at = now + stagger * config.probe_interval_s
        self._next_gossip_at = now + stagger * config.gossip_interval_s
        pp, rc = config.push_pull_interval_s, config.reconnect_interval_s
        self._next_push_pull_at = now + (1 + stagger) * pp if pp else None
        self._next_reconnect_at = now + (1 + stagger) * rc if rc else None
        self._next_reap_at = now + config.probe_interval_s

    # -- queries -------------------------------------------------------------------------------------------------

    @property
    def local_member(self) -> Member:
        return self._members[self.id]

    @property
    def awareness_score(self) -> int:
        return self._awareness.score

    @property
    def has_left(self) -> bool:
        return self._left

    @property
    def join_status(self) -> JoinStatus | None:
        return None if self._join is None else self._join.status

    def members(self) -> list[Member]:
        """Every known member, ourselves included, dead and left ones too until reaped."""
        return list(self._members.values())

    def alive_members(self) -> list[Member]:
        """Members that are alive or merely suspected, ourselves included."""
        return [m for m in self._members.values() if not m.status.is_gone]

    def member(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    def num_alive(self) -> int:
        """N as the protocol's formulas use it: live members including ourselves."""
        return len(self._peers) + (0 if self._left else 1)

    def next_deadline(self) -> float:
        """The earliest time ``tick`` has something to do (``math.inf`` if nothing is scheduled).

        Idle timers (gossip with nothing queued, reaping with nobody gone) are left out so an idle node is woken
        only by its probe period; when they gain work their time may already be past, meaning "tick now".
        """
        t = self._next_reap_at if self._gone else math.inf
        if self._queue or self._delegate_broadcasts:
            t = min(t, self._next_gossip_at)
        if not self._left:
            t = min(t, self._probe.deadline if self._probe is not None else self._next_probe_at)
            if self._next_push_pull_at is not None:
                t = min(t, self._next_push_pull_at)
            if self._next_reconnect_at is not None and self._gone:
                t = min(t, self._next_reconnect_at)
        if self._join is not None and self._join.retry_at is not None:
            t = min(t, self._join.retry_at)
        for suspicion in self._suspicions.values():
            if suspicion.deadline < t:
                t = suspicion.deadline
        for relay in self._relays.values():
            if relay.deadline < t:
                t = relay.deadline
        return t

    # -- driver entry points ---------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Run every timer that is due at ``now``."""
        out: list[Outgoing] = []
        probe_due = self._probe.deadline if self._probe is not None else self._next_probe_at
        if not self._left and now - probe_due > self.config.probe_interval_s:
            self._recover_from_stall(now)
        if self._join is not None and self._join.retry_at is not None and now >= self._join.retry_at:
            out.extend(self._join_attempt(now))
        if not self._left:
            self._run_probe(now, out)
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                if relay.nack:
                    out.append(self._packet(relay.requester, [encode(Nack(relay.seq))]))
        for node, sus in list(self._suspicions.items()):
            if now >= sus.deadline:
                current = self._members.get(node)
                del self._suspicions[node]
                if current is not None and current.status is MemberStatus.SUSPECT:
                    self.stats.deaths_declared += 1
                    self._on_dead(Dead(node, current.incarnation, self.id), now)
        if now >= self._next_gossip_at and (self._queue or self._delegate_broadcasts):
            self._next_gossip_at = now + self.config.gossip_interval_s
            out.extend(self._gossip(now))
        if not self._left:
            self._periodic_push_pull(now, out)
        if now >= self._next_reap_at and self._gone:
            self._next_reap_at = now + self.config.probe_interval_s
            self._reap(now)
        return out

    def receive(self, data: bytes, sender: Address, now: float) -> list[Outgoing]:
        """Handle one datagram. Raises `PacketDecodeError` before touching any state if it is malformed."""
        messages = decode_packet(data, self.config.max_packet_bytes)
        out: list[Outgoing] = []
        for message in messages:
            self._dispatch(message, sender, now, out)
        return out

    def receive_stream(self, data: bytes, sender: Address, now: float) -> StreamReply:
        """Handle one incoming stream request (push-pull, stream probe or app request)."""
        message = decode_stream(data, self.config.max_stream_bytes)
        if isinstance(message, PushPull):
            self.stats.push_pulls_served += 1
            own = next((row for row in message.states if row.node == message.source), None)
            holder = None if own is None or own.status.is_gone else \
                sender_holder(own.node, own.address, self.local_member, self._members.get(own.node))
            if own is not None and holder is not None:  # another process with this id: merge nothing of it
                self._conflict(ConflictingClaim(own.node, holder, own.address, "push_pull", message.join))
                return StreamReply(reply=encode(IdConflict(own.node, holder)))
            self._merge_remote(message, now)
            reply = self._push_pull_message(message.join)
            return StreamReply(reply=reply)
        if isinstance(message, Ping):
            return StreamReply(reply=encode(Ack(message.seq)) if message.target == self.id else None)
        if isinstance(message, AppRequest):
            return StreamReply(app_request=message)
        raise PacketDecodeError("unexpected_stream_message", type(message).__name__)

    def stream_response(self, request_id: int, data: bytes | None, now: float, *, refused: bool = False
                        ) -> list[Outgoing]:
        """Report how one of our `StreamRequest`s ended: the reply bytes, or None on failure/timeout.

        ``refused``: it failed in a way a retry cannot change (the peer could not decrypt us, or we it), so a join
        whose every seed refused fails at once instead of retrying for many seconds.
        """
        entry = self._streams.pop(request_id, None)
        if entry is None:
            return []
        kind, context = entry
        reply: Message | None = None
        if data is not None:
            try:
                reply = decode_stream(data, self.config.max_stream_bytes)
            except PacketDecodeError as exc:
                self.stats.count_drop(exc.reason)
        out: list[Outgoing] = []
        if kind == "probe":
            probe = self._probe
            if probe is not None and probe.seq == context:
                probe.stream_pending = False
                if isinstance(reply, Ack) and reply.seq == probe.seq:
                    self._probe_succeeded()
                elif probe.phase == "await_stream":
                    self._probe_failed(now)
        elif kind == "push_pull":
            ok = isinstance(reply, PushPull)
            if ok:
                self._merge_remote(reply, now)  # type: ignore[arg-type]
            conflict = reply.address if isinstance(reply, IdConflict) and reply.node == self.id else None
            join = self._join
            joining = join is not None and join.answered(request_id, now, self.config, ok=ok, refused=refused,
                                                         conflict=conflict)
            if conflict is not None and not joining:  # a joiner hears of it as its join's error instead
                self._conflict(ConflictingClaim(self.id, conflict, self.local_member.address, "refused_us"))
        return out

    def join(self, seeds: list[Address], now: float) -> list[Outgoing]:
        """Start joining through ``seeds`` by push-pull; progress is in ``join_status`` (retries with backoff)."""
        own = self.local_member.address
        self._broadcast_alive()  # announce ourselves too, not only through the seed (memberlist's setAlive)
        self._join = Join(seeds=[s for s in dict.fromkeys(seeds) if s != own])
        if not self._join.seeds:
            self._join.done = True
            return []
        return self._join_attempt(now)

    def leave(self, now: float) -> list[Outgoing]:
        """Announce a graceful departure. Keep ticking for a while so the news spreads, then stop the driver."""
        if self._left:
            return []
        me = self.local_member
        self._left = True
        self._probe = None
        self._set(replace(me, status=MemberStatus.LEFT, status_changed_at=now))
        self._queue.enqueue(self.id, encode(Left(self.id, me.incarnation)))
        return self._gossip(now)

    def adopt(self, members: list[Member], now: float) -> None:
        """Take ``members`` as known without gossiping them: restoring a saved table, or bootstrapping a simulation.

        Entries follow the usual precedence (an older incarnation than what we know is ignored); ourselves is skipped.
        """
        for member in members:
            current = self._members.get(member.id)
            if member.id == self.id or (current is not None and member.incarnation <= current.incarnation):
                continue
            self._set(replace(member, status_changed_at=now))

    def update_meta(self, meta: bytes, now: float) -> None:
        """Change our metadata: a new incarnation makes every member accept the new value."""
        if len(meta) > self.config.max_meta_bytes:
            raise PacketTooLargeError(len(meta), self.config.max_meta_bytes)
        me = self.local_member
        self._set(replace(me, incarnation=me.incarnation + 1, meta=meta))
        self._broadcast_alive()

    def app_message(self, member_id: str, payload: bytes) -> Packet:
        """A `send_to` datagram (best effort) for member ``member_id``."""
        data = encode_within(AppMessage(self.id, payload), self.config.max_packet_bytes)
        return self._packet(self._live_address(member_id), [data])

    def app_request(self, member_id: str, payload: bytes) -> tuple[Address, bytes]:
        """Where to send an app request and its encoding; the driver does ``Transport.request`` itself."""
        return self._live_address(member_id), encode_within(AppRequest(self.id, payload), self.config.max_stream_bytes)

    # -- probing -------------------------------------------------------------------------------------------------

    def _run_probe(self, now: float, out: list[Outgoing]) -> None:
        probe = self._probe
        if probe is not None and now >= probe.deadline:
            if probe.phase == "direct":
                self._start_indirect(probe, now, out)
            elif probe.phase == "indirect":
                if probe.stream_pending:
                    probe.phase = "await_stream"
                    probe.deadline = now + self.config.stream_timeout_s  # the driver reports sooner; a safety net
                else:
                    self._probe_failed(now)
            else:
                self._probe_failed(now)
        if self._probe is None and now >= self._next_probe_at:
            self._next_probe_at = now + self._awareness.scale(self.config.probe_interval_s)
            target = self._probe_order.next(self._probe_eligible)
            if target is not None:
                self._start_probe(self._members[target], now, out)

    def _probe_eligible(self, member_id: str) -> bool:
        member = self._members.get(member_id)
        return member is not None and not member.status.is_gone

    def _start_probe(self, target: Member, now: float, out: list[Outgoing]) -> None:
        seq = next(self._seq)
        self.stats.probes += 1
        self._probe = _Probe(seq, target.id, target.incarnation, "direct",
                             now + self._awareness.scale(self.config.probe_timeout_s))
        parts = [encode(Ping(seq, target.id, self.id))]
        if target.status is MemberStatus.SUSPECT:
            # Buddy system: tell the suspect directly, so it refutes now rather than when gossip reaches it.
            parts.insert(0, encode(Suspect(target.id, target.incarnation, self.id)))
        out.append(self._packet(target.address, parts))

    def _start_indirect(self, probe: _Probe, now: float, out: list[Outgoing]) -> None:
        target = self._members.get(probe.target)
        if target is None:
            self._probe = None
            return
        relays = self._random_peers(self.config.indirect_checks, exclude=target.id)
        for relay in relays:
            message = IndirectPing(probe.seq, target.id, target.address, self.id, True)
            out.append(self._packet(self._members[relay].address, [encode(message)]))
        probe.expected_nacks = len(relays)
        self.stats.indirect_probes += len(relays)
        if self.config.stream_fallback_probe:
            probe.stream_pending = True
            request_id = next(self._request_ids)
            self._streams[request_id] = ("probe", probe.seq)
            timeout = self._awareness.scale(self._indirect_window_s())
            out.append(StreamRequest(request_id, target.address, encode(Ping(probe.seq, target.id, self.id)),
                                     timeout))
        probe.phase = "indirect"
        probe.deadline = now + self._awareness.scale(self._indirect_window_s())

    def _indirect_window_s(self) -> float:
        """How long indirect probes get: the rest of the period, but at least one probe timeout, so relays (which
        nack after 80% of theirs, as Lifeguard does) are heard before we judge."""
        return max(self.config.probe_interval_s - self.config.probe_timeout_s, self.config.probe_timeout_s)

    def _probe_succeeded(self) -> None:
        self._probe = None
        self._awareness.apply_delta(-1)

    def _probe_failed(self, now: float) -> None:
        probe = self._probe
        assert probe is not None
        self._probe = None
        self.stats.probe_failures += 1
        # Lifeguard: relays that failed to nack point at *our* network; with no relays, blame ourselves a little.
        missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
        self._awareness.apply_delta(max(0, missed))
        target = self._members.get(probe.target)
        if target is not None and not target.status.is_gone:
            self._on_suspect(Suspect(target.id, target.incarnation, self.id), now)

    def _recover_from_stall(self, now: float) -> None:
        """We were not running (GC pause, overloaded host): don't convict anyone for what we failed to hear."""
        self.stats.stalls += 1
        self._awareness.apply_delta(1)
        grace = now + self.config.probe_interval_s
        for sus in self._suspicions.values():
            sus.postpone(grace)
        if self._probe is not None:
            self._probe.deadline = max(self._probe.deadline, now + self.config.probe_timeout_s)

    # -- incoming messages ------------------------------------------------------------------------------------------

    def _dispatch(self, message: Message, sender: Address, now: float, out: list[Outgoing]) -> None:
        if isinstance(message, Ping):
            if message.target == self.id:
                out.append(self._packet(sender, [encode(Ack(message.seq))]))
        elif isinstance(message, Ack):
            probe = self._probe
            if probe is not None and probe.seq == message.seq:
                self._probe_succeeded()
            elif (relay := self._relays.pop(message.seq, None)) is not None:
                out.append(self._packet(relay.requester, [encode(Ack(relay.seq))]))
        elif isinstance(message, Nack):
            if self._probe is not None and self._probe.seq == message.seq:
                self._probe.nacks += 1
        elif isinstance(message, IndirectPing):
            seq = next(self._seq)
            self._relays[seq] = _Relay(sender, message.seq, message.nack, now + 0.8 * self.config.probe_timeout_s)
            out.append(self._packet(message.target_address, [encode(Ping(seq, message.target, self.id))]))
        elif isinstance(message, Alive):
            self._on_alive(message, now)
        elif isinstance(message, Suspect):
            self._on_suspect(message, now)
        elif isinstance(message, Dead | Left):
            self._on_dead(message, now)
        elif isinstance(message, UserBroadcast | AppMessage):
            self._delegate.notify_message(message.payload, message.source)
        else:  # PushPull, AppRequest, AppResponse belong on streams
            self.stats.count_drop("stream_message_in_packet")

    def _on_alive(self, msg: Alive, now: float) -> None:
        current = self._members.get(msg.node)
        holder = claim_holder(msg.node, msg.address, msg.incarnation, MemberStatus.ALIVE, self.local_member, current)
        if holder is not None:
            self._conflict(ConflictingClaim(msg.node, holder, msg.address, "gossip"))
            return
        if msg.node == self.id:
            me = self.local_member
            newer = msg.incarnation > me.incarnation
            conflicting = msg.incarnation == me.incarnation and msg.meta != me.meta
            if not self._left and msg.address == me.address and (newer or conflicting):
                self._refute(msg.incarnation)
            return
        if len(msg.meta) > self.config.max_meta_bytes:
            self.stats.count_drop("meta_too_large")
            return
        if current is not None and msg.incarnation <= current.incarnation:
            return
        self._suspicions.pop(msg.node, None)
        changed_at = now if current is None or current.status is not MemberStatus.ALIVE else current.status_changed_at
        member = Member(msg.node, msg.address, msg.incarnation, MemberStatus.ALIVE, msg.meta, changed_at)
        self._set(member)
        self._queue.enqueue(msg.node, encode(msg))
        if current is None or current.status.is_gone:
            self._delegate.notify_join(member)
        elif (current.address, current.meta) != (member.address, member.meta):
            self._delegate.notify_update(member)

    def _on_suspect(self, msg: Suspect, now: float) -> None:
        current = self._members.get(msg.node)
        if current is None or msg.incarnation < current.incarnation:
            return
        if msg.node == self.id:
            if not self._left:
                self._refute(msg.incarnation)
            return
        suspicion = self._suspicions.get(msg.node)
        if suspicion is not None:
            if msg.incarnation > current.incarnation:
                self._set(replace(current, incarnation=msg.incarnation))
                suspicion.incarnation = msg.incarnation
            if suspicion.confirm(msg.source, now):
                self._queue.enqueue(msg.node, encode(msg))
            return
        if current.status is not MemberStatus.ALIVE:
            return
        n = self.num_alive()
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        min_s = suspicion_timeout_s(self.config, n)
        max_s = self.config.suspicion_max_timeout_mult * min_s
        self._suspicions[msg.node] = Suspicion(msg.source, msg.incarnation, k, min_s, max_s, now)
        self._set(replace(current, incarnation=msg.incarnation, status=MemberStatus.SUSPECT, status_changed_at=now))
        self._queue.enqueue(msg.node, encode(msg))
        self.stats.suspicions += 1

    def _on_dead(self, msg: Dead | Left, now: float) -> None:
        current = self._members.get(msg.node)
        if current is None or msg.incarnation < current.incarnation:
            return
        status = MemberStatus.LEFT if isinstance(msg, Left) else MemberStatus.DEAD
        if current.status.is_gone and not (status is MemberStatus.LEFT and current.status is MemberStatus.DEAD):
            return
        if msg.node == self.id:
            if not self._left:
                self._refute(msg.incarnation)
            return
        self._suspicions.pop(msg.node, None)
        member = replace(current, incarnation=msg.incarnation, status=status, status_changed_at=now)
        self._set(member)
        self._queue.enqueue(msg.node, encode(msg))
        if not current.status.is_gone:
            self._delegate.notify_leave(member)

    def _conflict(self, claim: ConflictingClaim) -> None:
        self.stats.count_drop("id_conflict")
        if self.on_conflict is not None:
            self.on_conflict(claim)

    def _refute(self, accused_incarnation: int) -> None:
        """Only a member may raise its own incarnation: the one move that clears a suspicion or death about it."""
        me = self.local_member
        self._set(replace(me, incarnation=max(me.incarnation, accused_incarnation) + 1))
        self.stats.refutations += 1
        self._awareness.apply_delta(1)
        self._broadcast_alive()

    def _broadcast_alive(self) -> None:
        me = self.local_member
        self._queue.enqueue(self.id, encode(Alive(me.id, me.incarnation, me.address, me.meta)))

    # -- push-pull and joining -------------------------------------------------------------------------------------

    def _push_pull_message(self, join: bool) -> bytes:
        states = tuple(RemoteState(m.id, m.address, m.incarnation, m.status, m.meta) for m in self._members.values())
        message = PushPull(self.id, join, states, self._delegate.local_state(join))
        return encode_within(message, self.config.max_stream_bytes)

    def _push_pull_request(self, address: Address, join: bool) -> StreamRequest:
        request_id = next(self._request_ids)
        self._streams[request_id] = ("push_pull", join)
        self.stats.push_pulls_started += 1
        return StreamRequest(request_id, address, self._push_pull_message(join), self.config.stream_timeout_s)

    def _merge_remote(self, message: PushPull, now: float) -> None:
        """Apply a peer's table. A remote "dead" only makes us suspect (we may know better), unless it is us.

        A row about another process using a known live member's id (or ours) is skipped: suspect, dead and left
        messages name no address, so applying it would pin that process's fate on the member we know.
        """
        for row in message.states:
            if row.status is MemberStatus.ALIVE:
                self._on_alive(Alive(row.node, row.incarnation, row.address, row.meta), now)
            elif (holder := claim_holder(row.node, row.address, row.incarnation, row.status, self.local_member,
                                         self._members.get(row.node))) is not None:
                self._conflict(ConflictingClaim(row.node, holder, row.address, "gossip"))
            elif row.status is MemberStatus.LEFT:
                self._on_dead(Left(row.node, row.incarnation), now)
            else:
                if row.node not in self._members and row.status is MemberStatus.SUSPECT:
                    self._on_alive(Alive(row.node, row.incarnation, row.address, row.meta), now)
                self._on_suspect(Suspect(row.node, row.incarnation, self.id), now)
        self._delegate.merge_remote_state(message.app_state, message.join)

    def _periodic_push_pull(self, now: float, out: list[Outgoing]) -> None:
        if self._next_push_pull_at is not None and now >= self._next_push_pull_at:
            interval = push_pull_scale(self.config.push_pull_interval_s, self.num_alive())
            self._next_push_pull_at = now + interval
            peer = self._random_peers(1)
            if peer:
                out.append(self._push_pull_request(self._members[peer[0]].address, False))
        if self._next_reconnect_at is not None and now >= self._next_reconnect_at:
            self._next_reconnect_at = now + self.config.reconnect_interval_s
            dead = [m for m in self._gone if self._members[m].status is MemberStatus.DEAD]
            if dead:
                out.append(self._push_pull_request(self._members[self._rng.choice(dead)].address, False))

    def _join_attempt(self, now: float) -> list[Outgoing]:
        join = self._join
        assert join is not None
        requests = [self._push_pull_request(seed, True) for seed in join.seeds]
        join.start_round([r.request_id for r in requests])
        return list(requests)

    # -- dissemination ----------------------------------------------------------------------------------------------

    def _gossip(self, now: float) -> list[Outgoing]:
        if not self._queue and not self._delegate_broadcasts:
            return []
        targets = self._random_peers(self.config.gossip_nodes)
        cutoff = now - self.config.gossip_to_the_dead_s
        recently_gone = [m for m in self._gone if self._members[m].status_changed_at >= cutoff]
        if recently_gone and len(targets) < self.config.gossip_nodes:
            extra = self._rng.sample(recently_gone, min(len(recently_gone), self.config.gossip_nodes - len(targets)))
            targets.extend(extra)
        out: list[Outgoing] = []
        for target in targets:
            packet = self._packet(self._members[target].address, [])
            if packet.data:
                out.append(packet)
        return out

    def _packet(self, address: Address, parts: list[bytes]) -> Packet:
        """Fill a datagram: the given parts, then queued updates, then delegate broadcasts, never over the limit."""
        if not self._queue and not self._delegate_broadcasts and len(parts) == 1:
            data = parts[0]  # the common case of an idle cluster: a lone ping or ack
            self.stats.packets_built += 1
            self.stats.bytes_built += len(data)
            return Packet(address, data)
        extra = self._delegate.get_broadcasts if self._delegate_broadcasts else None
        data, rejected = fill_packet(parts, self.config.max_packet_bytes, self._queue, self.num_alive(), extra,
                                     lambda payload: encode(UserBroadcast(self.id, payload)), self._user_overhead)
        for _ in range(rejected):
            self.stats.count_drop("delegate_broadcast_too_large")
        if data:
            self.stats.packets_built += 1
            self.stats.bytes_built += len(data)
        return Packet(address, data)

    # -- member table bookkeeping -------------------------------------------------------------------------------------

    def _set(self, member: Member) -> None:
        """The one place a member's entry changes, keeping the peer list, gone set and probe order in step."""
        old = self._members.get(member.id)
        self._members[member.id] = member
        if self.observer is not None:
            self.observer(old, member)
        if member.id == self.id:
            return
        if member.status.is_gone:
            self._gone[member.id] = None
            self._remove_peer(member.id)
        else:
            self._gone.pop(member.id, None)
            if member.id not in self._peer_index:
                self._peer_index[member.id] = len(self._peers)
                self._peers.append(member.id)
                self._probe_order.add(member.id)

    def _remove_peer(self, member_id: str) -> None:
        index = self._peer_index.pop(member_id, None)
        if index is None:
            return
        last = self._peers.pop()
        if last != member_id:
            self._peers[index] = last
            self._peer_index[last] = index
        self._probe_order.remove(member_id)

    def _random_peers(self, k: int, exclude: str | None = None) -> list[str]:
        """Up to ``k`` distinct random live peers (memberlist's kRandomNodes: bounded tries, no full copy)."""
        chosen: list[str] = []
        n = len(self._peers)
        for _ in range(3 * n):
            if len(chosen) >= k:
                break
            candidate = self._peers[self._rng.randrange(n)]
            if candidate != exclude and candidate not in chosen:
                chosen.append(candidate)
        return chosen

    def _reap(self, now: float) -> None:
        cutoff = now - self.config.dead_reap_after_s
        for member_id in [m for m in self._gone if self._members[m].status_changed_at <= cutoff]:
            del self._gone[member_id]
            del self._members[member_id]

    def _live_address(self, member_id: str) -> Address:
        member = self._members.get(member_id)
        if member is None or member.status.is_gone:
            raise UnknownMemberError(member_id)
        return member.address

