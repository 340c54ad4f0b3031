"""A deterministic in-memory network: every packet's fate comes from one seeded `random.Random`.

Modelled on trio's fake network: a datagram is delivered, dropped, duplicated, or delayed by a random latency
(which reorders packets); partitions (symmetric, one-way, between groups), paused nodes (they neither receive nor
run; their inbox is delivered in order when they resume) and crashed nodes are set on a mutable `FaultPlan`.
Streams are reliable unless the peer is unreachable or crashed, in which case the requester sees a failure at its
timeout. Time is a `ManualClock`; the network only schedules events, and whoever drives it (`Simulation`) advances
the clock to the next one. Same seed, same calls: same run, bit for bit.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rumor.gossip.clock import Address, ManualClock
from rumor.gossip.errors import GossipError

PacketSink = Callable[[bytes, Address], None]
RequestSink = Callable[[bytes, Address], bytes | None]
"""Synchronous stream handler in the simulator: the reply, or None for "no answer" (the requester sees a failure)."""
ResponseCallback = Callable[[bytes | None], None]


class SimulationError(GossipError, RuntimeError):
    """The simulation was driven in a way it cannot honour (unknown address, a handler that really awaited...)."""


@dataclass
class FaultPlan:
    """What goes wrong, and when. Mutate it while a simulation runs (partition, heal, pause, crash)."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    latency_s: tuple[float, float] = (0.001, 0.005)
    groups: dict[Address, int] = field(default_factory=dict)
    blocked: set[tuple[Address, Address]] = field(default_factory=set)
    paused_until: dict[Address, float] = field(default_factory=dict)
    crashed: set[Address] = field(default_factory=set)

    def partition(self, *groups: Iterable[Address]) -> None:
        """Members of different groups cannot talk (both directions); addresses in no group reach everyone."""
        self.groups = {addr: i for i, group in enumerate(groups) for addr in group}

    def block(self, src: Address, dst: Address) -> None:
        """One-way loss: ``src`` can no longer reach ``dst`` (the reverse direction still works)."""
        self.blocked.add((src, dst))

    def heal(self) -> None:
        """Remove every partition and one-way block (pauses and crashes stay)."""
        self.groups = {}
        self.blocked = set()

    def can_reach(self, src: Address, dst: Address) -> bool:
        if src in self.crashed or dst in self.crashed or (src, dst) in self.blocked:
            return False
        g_src, g_dst = self.groups.get(src), self.groups.get(dst)
        return g_src is None or g_dst is None or g_src == g_dst

    def is_paused(self, addr: Address, now: float) -> bool:
        return self.paused_until.get(addr, -1.0) > now


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_sent: int = 0
    bytes_by_sender: dict[Address, int] = field(default_factory=dict)
    stream_requests: int = 0
    stream_failures: int = 0


class MemoryNetwork:
    def __init__(self, rng: random.Random, clock: ManualClock, faults: FaultPlan | None = None) -> None:
        self.rng = rng
        self.clock = clock
        self.faults = faults or FaultPlan()
        self.stats = NetworkStats()
        self._packet_sinks: dict[Address, PacketSink] = {}
        self._request_sinks: dict[Address, RequestSink] = {}
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._backlog: dict[Address, list[Callable[[], None]]] = {}
        self.on_resume: Callable[[Address], None] | None = None

    def register(self, address: Address, on_packet: PacketSink, on_request: RequestSink) -> None:
        self._packet_sinks[address] = on_packet
        self._request_sinks[address] = on_request

    # -- scheduling -------------------------------------------------------------------------------------------------

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action`` when the driver reaches virtual time ``at`` (ties run in scheduling order)."""
        heapq.heappush(self._events, (at, next(self._order), action))

    def next_event_time(self) -> float | None:
        return self._events[0][0] if self._events else None

    def run_due(self, now: float) -> int:
        """Run every event due at or before ``now``; returns how many ran."""
        ran = 0
        while self._events and self._events[0][0] <= now:
            _, _, action = heapq.heappop(self._events)
            action()
            ran += 1
        return ran

    def _latency(self) -> float:
        low, high = self.faults.latency_s
        return self.rng.uniform(low, high)

    # -- faults that need the network's help ---------------------------------------------------------------------

    def pause(self, address: Address, duration_s: float) -> None:
        """Freeze a node: it receives nothing and (in `Simulation`) does not run until ``now + duration_s``."""
        until = self.clock.now() + duration_s
        self.faults.paused_until[address] = until
        self.schedule(until, lambda: self._resume(address))

    def _resume(self, address: Address) -> None:
        if self.faults.is_paused(address, self.clock.now()):
            return  # paused again for longer meanwhile
        self.faults.paused_until.pop(address, None)
        for action in self._backlog.pop(address, []):
            action()
        if self.on_resume is not None:
            self.on_resume(address)

    def defer(self, address: Address, action: Callable[[], None]) -> None:
        """Run ``action`` when the paused ``address`` resumes (what a frozen process finds waiting for it)."""
        self._backlog.setdefault(address, []).append(action)

    def crash(self, address: Address) -> None:
        """The node stops for good: traffic to and from it vanishes, its backlog is lost."""
        self.faults.crashed.add(address)
        self._backlog.pop(address, None)

    def restore(self, address: Address) -> None:
        """Bring a crashed address back (a restarted process registers new sinks first)."""
        self.faults.crashed.discard(address)

    # -- datagrams --------------------------------------------------------------------------------------------------

    def send_packet(self, src: Address, dst: Address, data: bytes) -> None:
        """Best effort: the fate (drop, duplicate, latency) is drawn now from the seeded rng."""
        faults = self.faults
        self.stats.sent += 1
        self.stats.bytes_sent += len(data)
        self.stats.bytes_by_sender[src] = self.stats.bytes_by_sender.get(src, 0) + len(data)
        if not faults.can_reach(src, dst) or (faults.drop_rate and self.rng.random() < faults.drop_rate):
            self.stats.dropped += 1
            return
        copies = 2 if faults.duplicate_rate and self.rng.random() < faults.duplicate_rate else 1
        self.stats.duplicated += copies - 1
        now = self.clock.now()
        for _ in range(copies):
            self.schedule(now + self._latency(), lambda: self._deliver(src, dst, data))

    def _deliver(self, src: Address, dst: Address, data: bytes) -> None:
        if not self.faults.can_reach(src, dst):
            self.stats.dropped += 1
            return
        if self.faults.is_paused(dst, self.clock.now()):
            self.defer(dst, lambda: self._deliver(src, dst, data))
            return
        sink = self._packet_sinks.get(dst)
        if sink is None:
            self.stats.dropped += 1
            return
        self.stats.delivered += 1
        sink(data, src)

    # -- streams ----------------------------------------------------------------------------------------------------

    def request(self, src: Address, dst: Address, data: bytes, timeout_s: float, on_done: ResponseCallback) -> None:
        """Reliable request/response; ``on_done(None)`` at the timeout if the peer cannot answer in time."""
        self.stats.stream_requests += 1
        now = self.clock.now()
        deadline = now + timeout_s
        finished = False

        def finish(reply: bytes | None) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            if reply is None:
                self.stats.stream_failures += 1
            on_done(reply)

        def arrive() -> None:
            t = self.clock.now()
            if finished or t > deadline or not self.faults.can_reach(src, dst):
                return
            if self.faults.is_paused(dst, t):
                self.defer(dst, arrive)
                return
            sink = self._request_sinks.get(dst)
            reply = sink(data, src) if sink is not None else None
            if reply is None:
                finish(None)
                return
            at = self.clock.now() + self._latency()
            if at <= deadline:
                self.schedule(at, lambda: finish(reply if self.faults.can_reach(dst, src) else None))

        self.schedule(now + self._latency(), arrive)
        self.schedule(deadline, lambda: finish(None))
