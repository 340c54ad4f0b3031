"""The SWIM + Lifeguard core of `gossip.membership.Membership`: failure detection and dissemination.

What lives here is everything a node learns and spreads by datagrams: probing one member per period (direct ping,
then indirect pings through relays, then a stream ping), suspicion with Lifeguard's dynamic timeouts and local
health, the alive/suspect/dead/left transitions every message causes, refutation, and piggybacking queued updates
on every packet, all over the entries of a `gossip.member_table.MemberTable`. `Membership` adds push-pull state
sync and joining on top, and is what drivers use; its module docstring says how to drive it.

Nothing here reads a clock, draws global randomness or does I/O.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from rumor.gossip.awareness import Awareness
from rumor.gossip.broadcast_queue import PART_OVERHEAD, BroadcastQueue, fill_packet
from rumor.gossip.clock import Address
from rumor.gossip.config import Config, suspicion_timeout_s
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import PacketDecodeError, PacketTooLargeError
from rumor.gossip.id_conflict import ConflictingClaim, claim_holder
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.member_table import MemberTable
from rumor.gossip.messages import (
    Ack,
    Alive,
    AppMessage,
    AppRequest,
    Dead,
    IndirectPing,
    Left,
    Message,
    Nack,
    Ping,
    Suspect,
    UserBroadcast,
    encode,
)
from rumor.gossip.outgoing import MembershipStats, Outgoing, Packet, StreamReply, StreamRequest
from rumor.gossip.suspicion import Suspicion

__all__ = ["Swim"]


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


class Swim(MemberTable):
    """One node's SWIM + Lifeguard protocol over its member table; never used alone (`Membership` is this plus
    push-pull state sync, and documents the parameters)."""

    def __init__(self, config: Config, node_id: str, address: Address, rng: random.Random, now: float,
                 delegate: Delegate | None = None, meta: bytes = b"", incarnation: int = 0) -> None:
        if len(meta) > config.max_meta_bytes:
            raise PacketTooLargeError(len(meta), config.max_meta_bytes)
        super().__init__(Member(node_id, address, incarnation, MemberStatus.ALIVE, meta, now), rng)
        self.config = config
        self._delegate = delegate or Delegate()
        # Skip building empty gossip packets when nobody could fill them (most ticks of an idle cluster).
        self._delegate_broadcasts = getattr(type(self._delegate), "get_broadcasts", None) is not Delegate.get_broadcasts
        self._suspicions: dict[str, Suspicion] = {}
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._queue = BroadcastQueue(config.retransmit_mult)
        self._seq = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._streams: dict[int, tuple[str, object]] = {}  # request id -> (kind, context), for stream_response
        self._left = False
        self._user_overhead = len(encode(UserBroadcast(node_id, b""))) + 1 + PART_OVERHEAD
        self.stats = MembershipStats()
        self.on_conflict: Callable[[ConflictingClaim], None] | None = None
        """Called for every refused claim to a node id alive elsewhere (`gossip.id_conflict`): the driver logs it."""
        #: the random phase of every periodic timer (`Membership` staggers its push-pull timers by it too)
        self._stagger = stagger = rng.random()
        self._next_probe_at = now + stagger * config.probe_interval_s
        self._next_gossip_at = now + stagger * config.gossip_interval_s
        self._next_reap_at = now + config.probe_interval_s

    # -- queries -------------------------------------------------------------------------------------------------

    @property
    def awareness_score(self) -> int:
        return self._awareness.score

    @property
    def has_left(self) -> bool:
        return self._left

    def num_alive(self) -> int:
        """N as the protocol's formulas use it: live members including ourselves."""
        return len(self._peers) + (0 if self._left else 1)

    def _swim_deadline(self) -> float:
        """The earliest time a timer of this core is due (``math.inf`` if none); see `Membership.next_deadline`."""
        t = self._next_reap_at if self._gone else math.inf
        if self._queue or self._delegate_broadcasts:
            t = min(t, self._next_gossip_at)
        if not self._left:
            t = min(t, self._probe.deadline if self._probe is not None else self._next_probe_at)
        for suspicion in self._suspicions.values():
            if suspicion.deadline < t:
                t = suspicion.deadline
        for relay in self._relays.values():
            if relay.deadline < t:
                t = relay.deadline
        return t

    # -- timers (run in `Membership.tick`'s order) ---------------------------------------------------------------

    def _check_stall(self, now: float) -> None:
        probe_due = self._probe.deadline if self._probe is not None else self._next_probe_at
        if not self._left and now - probe_due > self.config.probe_interval_s:
            self._recover_from_stall(now)

    def _expire(self, now: float, out: list[Outgoing]) -> None:
        """Relays whose target never answered (nack the requester if it asked), suspicions whose time is up."""
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

    def _gossip_if_due(self, now: float, out: list[Outgoing]) -> None:
        if now >= self._next_gossip_at and (self._queue or self._delegate_broadcasts):
            self._next_gossip_at = now + self.config.gossip_interval_s
            out.extend(self._gossip(now))

    def _reap_if_due(self, now: float) -> None:
        if now >= self._next_reap_at and self._gone:
            self._next_reap_at = now + self.config.probe_interval_s
            self._reap(now - self.config.dead_reap_after_s)

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

    def _answer_stream(self, message: Message) -> StreamReply:
        """A stream request other than push-pull: a stream ping (the last resort of a probe) or an app request."""
        if isinstance(message, Ping):
            return StreamReply(reply=encode(Ack(message.seq)) if message.target == self.id else None)
        if isinstance(message, AppRequest):
            return StreamReply(app_request=message)
        raise PacketDecodeError("unexpected_stream_message", type(message).__name__)

    def _probe_answered(self, seq: object, reply: Message | None, now: float) -> None:
        """How our stream ping ``seq`` ended: an ack clears the probe; else, if it was all we waited for, it fails."""
        probe = self._probe
        if probe is not None and probe.seq == seq:
            probe.stream_pending = False
            if isinstance(reply, Ack) and reply.seq == probe.seq:
                self._probe_succeeded()
            elif probe.phase == "await_stream":
                self._probe_failed(now)

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
