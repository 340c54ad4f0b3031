"""Which delta groups this replica holds, per origin, and the membership-driven GC of that metadata.

Vocabulary. A *delta group* is named ``(origin, seq)`` where ``origin = (node id, epoch)`` (a restarted process
draws a new, larger epoch, so its seqs start again without colliding). Per origin this replica keeps:

- ``covered``: every group ``1..covered`` of that origin is contained in this replica's state. It advances when
  groups arrive contiguously, and after a *complete* anti-entropy session with a peer that claimed a vector (the
  session made our state include the peer's, so it includes every group the peer's vector covers).
- ``above``: seqs received beyond ``covered`` (a window of ``dedupe_window``; older ids count as seen). Together they
  deduplicate epidemic forwarding: a group is forwarded only the first time it is seen.

Peers report their vectors in every anti-entropy handshake; ``acked[member]`` is the last vector a member reported.

**What GC compacts, and why it is safe.** An origin ``o`` is *departed* when its node has not been a live member for
``gc_grace_s`` (dead or left, whether or not already reaped) or when a newer epoch of the same node id exists (the
process restarted). A departed origin's entries are dropped from this replica's vector, dedupe window and every
``acked`` vector once **every live member's acknowledged vector covers this replica's ``covered[o]``** (or that
member reported ``o`` as retired itself). ``o`` then goes to a bounded *retired* list: later groups from it are still
merged (data is never refused) but no longer tracked or forwarded, so a straggler cannot resurrect the metadata.
This metadata only decides forwarding and what we may claim; the data itself lives in the CRDT states, which GC never
touches, so compacting it cannot lose an update a live member still needs: the worst outcome of compacting early
would be an extra anti-entropy repair. Members that never reported a vector block GC (unknown = not covered).

**What is NOT safe to compact, and is not:** the CRDT states' own causal contexts. An entry of a removed replica in
a state's context, while that replica's dots still appear in the store (an element it added, a register value it
wrote), is what makes an observed remove or overwrite of those dots work, and what stops a late delta carrying those
dots from resurrecting a removed element. Dropping it would re-admit removed elements or lose concurrent writes. So
`crdt` contexts keep removed replicas; only the replication layer's per-origin vectors are compacted here.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from rumor.server.replication.wire import OriginKey, Vector

RETIRED_MEMORY = 1024
"""Retired origins remembered (FIFO); an even later straggler is tracked again, then collected again."""
RETIRED_ADVERTISED = 64
"""Most recently retired origins reported to peers (so their GC can count us as covering them)."""


@dataclass(slots=True)
class _Origin:
    covered: int = 0
    above: set[int] = field(default_factory=set)
    floor: int = 0
    last_alive: float = 0.0


class Coverage:
    def __init__(self, self_origin: OriginKey, now: float, window: int = 4096) -> None:
        self.self_origin = self_origin
        self.window = window
        self._origins: dict[OriginKey, _Origin] = {self_origin: _Origin(last_alive=now)}
        self.acked: dict[str, Vector] = {}
        self._acked_retired: dict[str, set[OriginKey]] = {}
        self.retired: OrderedDict[OriginKey, float] = OrderedDict()
        self.collected = 0

    # -- groups ----------------------------------------------------------------------------------------------------

    def seen(self, origin: OriginKey, seq: int) -> bool:
        if origin in self.retired:
            return True
        state = self._origins.get(origin)
        return state is not None and (seq <= max(state.covered, state.floor) or seq in state.above)

    def record(self, origin: OriginKey, seq: int, now: float) -> bool:
        """A group arrived (or was made here). Returns True when it is new: merge and forward it."""
        if self.seen(origin, seq):
            return False
        state = self._origins.get(origin)
        if state is None:
            state = self._origins[origin] = _Origin(last_alive=now)
        state.above.add(seq)
        self._compact(state)
        return True

    def _compact(self, state: _Origin) -> None:
        while state.covered + 1 in state.above:
            state.covered += 1
            state.above.discard(state.covered)
        if len(state.above) > self.window:
            keep = sorted(state.above)[-self.window :]
            state.floor = max(state.floor, keep[0] - 1)
            state.above = {s for s in keep if s > state.floor}

    def vector(self) -> Vector:
        """What this replica's state is known to contain: ``origin -> covered``."""
        return {origin: s.covered for origin, s in self._origins.items() if s.covered > 0}

    def raise_to(self, vector: Vector, now: float) -> None:
        """After a complete session with a peer that claimed ``vector``: our state now includes the peer's."""
        for origin, seq in vector.items():
            if origin in self.retired:
                continue
            state = self._origins.get(origin)
            if state is None:
                state = self._origins[origin] = _Origin(last_alive=now)
            if seq > state.covered:
                state.covered = seq
                state.above = {s for s in state.above if s > seq}
                self._compact(state)

    def note_ack(self, member: str, vector: Vector, retired: list[OriginKey]) -> None:
        """A member reported its vector (monotone per member: keep the pointwise max) and its retired origins."""
        old = self.acked.get(member)
        if old is None:
            self.acked[member] = {o: s for o, s in vector.items() if o not in self.retired}
        else:
            for origin, seq in vector.items():
                if seq > old.get(origin, 0) and origin not in self.retired:
                    old[origin] = seq
        if retired:
            self._acked_retired.setdefault(member, set()).update(retired)

    def advertised_retired(self) -> list[OriginKey]:
        return list(self.retired)[-RETIRED_ADVERTISED:]

    # -- garbage collection ------------------------------------------------------------------------------------------

    def observe_live(self, live: set[str], now: float) -> None:
        """Refresh ``last_alive`` of origins whose node is a live member (call each tick with the live ids)."""
        for (node, _epoch), state in self._origins.items():
            if node in live:
                state.last_alive = now
        for origin in [o for o in self.retired if o[0] in live and not self._superseded(o)]:
            del self.retired[origin]  # falsely declared dead and back with the same process: track it again

    def _superseded(self, origin: OriginKey) -> bool:
        node, epoch = origin
        return any(n == node and e > epoch for n, e in self._origins)

    def departed(self, live: set[str], now: float, grace_s: float) -> list[OriginKey]:
        out = []
        for origin, state in self._origins.items():
            if origin == self.self_origin:
                continue
            if self._superseded(origin) or (origin[0] not in live and now - state.last_alive >= grace_s):
                out.append(origin)
        return out

    def blockers(self, origin: OriginKey, live: set[str]) -> list[str]:
        """Live members (other than us) whose acknowledged vector does not yet cover our ``covered[origin]``."""
        need = self._origins[origin].covered if origin in self._origins else 0
        out = []
        for member in sorted(live):
            if member == self.self_origin[0]:
                continue
            if origin in self._acked_retired.get(member, ()):
                continue
            acked = self.acked.get(member)
            if acked is None or acked.get(origin, 0) < need:
                out.append(member)
        return out

    def collect(self, live: set[str], now: float, grace_s: float) -> list[OriginKey]:
        """Drop departed origins every live member covers; returns what was dropped (see the module docstring)."""
        dropped = [o for o in self.departed(live, now, grace_s) if not self.blockers(o, live)]
        for origin in dropped:
            del self._origins[origin]
            for vector in self.acked.values():
                vector.pop(origin, None)
            self.retired[origin] = now
            while len(self.retired) > RETIRED_MEMORY:
                self.retired.popitem(last=False)
        self.collected += len(dropped)
        for member in [m for m in self.acked if m not in live and not any(o[0] == m for o in self._origins)]:
            del self.acked[member]  # a departed member whose origins are all collected: its acks are moot
            self._acked_retired.pop(member, None)
        for retired in self._acked_retired.values():
            retired.intersection_update(self._origins)
        return dropped

    def origins(self) -> list[OriginKey]:
        return sorted(self._origins)

    def tracked_entries(self) -> int:
        """Size of the metadata: origins tracked here plus entries held in acked vectors."""
        return len(self._origins) + sum(len(v) for v in self.acked.values())


__all__ = ["RETIRED_ADVERTISED", "RETIRED_MEMORY", "Coverage"]
