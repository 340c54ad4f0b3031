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

The protocol is split where memberlist splits it: `gossip.swim.Swim` is everything learned and spread by datagrams
(probes, suspicion, the alive/suspect/dead transitions, piggybacked dissemination) over the entries of a
`gossip.member_table.MemberTable`; this module adds push-pull state sync, the full-table exchange over a stream
(periodically with a random member, with a dead one to heal partitions, and with the seeds when joining), and every
entry point a driver calls, the schedule that runs both included.

Nothing here reads a clock, draws global randomness or does I/O, so a whole cluster runs in virtual time.
"""

from __future__ import annotations

import random
from dataclasses import replace

from rumor.gossip.clock import Address
from rumor.gossip.config import Config, push_pull_scale
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import PacketDecodeError, PacketTooLargeError
from rumor.gossip.id_conflict import ConflictingClaim, claim_holder, sender_holder
from rumor.gossip.joining import Join
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.messages import (
    Alive,
    AppMessage,
    AppRequest,
    IdConflict,
    Left,
    Message,
    PushPull,
    RemoteState,
    Suspect,
    decode_packet,
    decode_stream,
    encode,
    encode_within,
)
from rumor.gossip.outgoing import JoinStatus, MembershipStats, Outgoing, Packet, StreamReply, StreamRequest
from rumor.gossip.swim import Swim

__all__ = ["JoinStatus", "Membership", "MembershipStats", "Outgoing", "Packet", "StreamReply", "StreamRequest"]


class Membership(Swim):
    """One node's view of the cluster and its protocol; see the module docstring for driving it.

    ``rng`` is the only source of randomness (probe order, gossip targets, relays, staggering); ``meta`` is small
    opaque metadata every member sees; ``incarnation`` lets a restarted node start above what it used before.
    """

    def __init__(self, config: Config, node_id: str, address: Address, rng: random.Random, now: float,
                 delegate: Delegate | None = None, meta: bytes = b"", incarnation: int = 0) -> None:
        super().__init__(config, node_id, address, rng, now, delegate, meta, incarnation)
        self._join: Join | None = None
        pp, rc = config.push_pull_interval_s, config.reconnect_interval_s
        self._next_push_pull_at = now + (1 + self._stagger) * pp if pp else None
        self._next_reconnect_at = now + (1 + self._stagger) * rc if rc else None

    @property
    def join_status(self) -> JoinStatus | None:
        return None if self._join is None else self._join.status

    def next_deadline(self) -> float:
        """The earliest time ``tick`` has something to do (``math.inf`` if nothing is scheduled).

        Idle timers (gossip with nothing queued, reaping with nobody gone) are left out so an idle node is woken
        only by its probe period; when they gain work their time may already be past, meaning "tick now".
        """
        t = self._swim_deadline()
        if not self._left:
            if self._next_push_pull_at is not None:
                t = min(t, self._next_push_pull_at)
            if self._next_reconnect_at is not None and self._gone:
                t = min(t, self._next_reconnect_at)
        if self._join is not None and self._join.retry_at is not None:
            t = min(t, self._join.retry_at)
        return t

    # -- driver entry points ---------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Run every timer that is due at ``now``, always in this order (the simulator's runs replay by seed)."""
        out: list[Outgoing] = []
        self._check_stall(now)
        if self._join is not None and self._join.retry_at is not None and now >= self._join.retry_at:
            out.extend(self._join_attempt(now))
        if not self._left:
            self._run_probe(now, out)
        self._expire(now, out)
        self._gossip_if_due(now, out)
        if not self._left:
            self._periodic_push_pull(now, out)
        self._reap_if_due(now)
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
        if not isinstance(message, PushPull):
            return self._answer_stream(message)
        self.stats.push_pulls_served += 1
        own = next((row for row in message.states if row.node == message.source), None)
        holder = None if own is None or own.status.is_gone else \
            sender_holder(own.node, own.address, self.local_member, self._members.get(own.node))
        if own is not None and holder is not None:  # another process with this id: merge nothing of it
            self._conflict(ConflictingClaim(own.node, holder, own.address, "push_pull", message.join))
            return StreamReply(reply=encode(IdConflict(own.node, holder)))
        self._merge_remote(message, now)
        return StreamReply(reply=self._push_pull_message(message.join))

    def stream_response(self, request_id: int, data: bytes | None, now: float, *, refused: bool = False) -> None:
        """Report how one of our `StreamRequest`s ended: the reply bytes, or None on failure/timeout.

        ``refused``: it failed in a way a retry cannot change (the peer could not decrypt us, or we it), so a join
        whose every seed refused fails at once instead of retrying for many seconds. Nothing is sent in answer:
        what the outcome changes leaves with later ticks.
        """
        entry = self._streams.pop(request_id, None)
        if entry is None:
            return
        kind, context = entry
        reply: Message | None = None
        if data is not None:
            try:
                reply = decode_stream(data, self.config.max_stream_bytes)
            except PacketDecodeError as exc:
                self.stats.count_drop(exc.reason)
        if kind == "probe":
            self._probe_answered(context, reply, now)
        elif kind == "push_pull":
            self._push_pull_answered(request_id, reply, now, refused)

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

    # -- push-pull ---------------------------------------------------------------------------------------------------

    def _push_pull_message(self, join: bool) -> bytes:
        states = tuple(RemoteState(m.id, m.address, m.incarnation, m.status, m.meta) for m in self._members.values())
        message = PushPull(self.id, join, states, self._delegate.local_state(join))
        return encode_within(message, self.config.max_stream_bytes)

    def _push_pull_request(self, address: Address, join: bool) -> StreamRequest:
        request_id = next(self._request_ids)
        self._streams[request_id] = ("push_pull", join)
        self.stats.push_pulls_started += 1
        return StreamRequest(request_id, address, self._push_pull_message(join), self.config.stream_timeout_s)

    def _push_pull_answered(self, request_id: int, reply: Message | None, now: float, refused: bool) -> None:
        if isinstance(reply, PushPull):
            self._merge_remote(reply, now)
        conflict = reply.address if isinstance(reply, IdConflict) and reply.node == self.id else None
        join = self._join
        joining = join is not None and join.answered(request_id, now, self.config, ok=isinstance(reply, PushPull),
                                                     refused=refused, conflict=conflict)
        if conflict is not None and not joining:  # a joiner hears of it as its join's error instead
            self._conflict(ConflictingClaim(self.id, conflict, self.local_member.address, "refused_us"))

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

