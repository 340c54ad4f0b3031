"""N membership state machines on a `MemoryNetwork`, in virtual time: whole-cluster tests in milliseconds.

The loop always jumps the `ManualClock` to the next thing that happens (a packet arrival or a node's
``next_deadline``), so there are no sleeps and no idle spinning; a run is reproducible from its seed.

Applications ride along the way they do in production: give ``delegate_factory`` and each node gets your
`Delegate` (which sees joins, leaves, broadcasts, push-pull state and app messages). A delegate may also define
``next_deadline() -> float | None`` and ``tick(now) -> None`` to run its own timers; `SimNode.send_to` and
`SimNode.request` are its application channel. ``handle_request`` may be ``async`` but must not really suspend.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from rumor.gossip.clock import Address, ManualClock
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import PacketDecodeError
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.membership import Membership
from rumor.gossip.messages import decode_app_response, encode_app_error, encode_app_response
from rumor.gossip.outgoing import Outgoing, Packet
from rumor.gossip.sim_network import FaultPlan, MemoryNetwork, SimulationError

DelegateFactory = Callable[["SimNode"], Delegate]
RequestDone = Callable[[bytes | None, str | None], None]
"""Outcome of `SimNode.request`: (payload, None) on success, (None, reason) on failure."""


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One node changed its view of one member (status or incarnation)."""

    time: float
    observer: str
    subject: str
    status: MemberStatus
    incarnation: int


class SimNode:
    """One simulated process: its membership, its application delegate, and its application channel."""

    def __init__(self, sim: Simulation, index: int, node_id: str, address: Address) -> None:
        self.sim = sim
        self.index = index
        self.id = node_id
        self.address = address
        self.app: Delegate = Delegate()
        self.membership: Membership
        self.decode_errors: dict[str, int] = {}

    @property
    def is_up(self) -> bool:
        faults = self.sim.network.faults
        return self.address not in faults.crashed and not faults.is_paused(self.address, self.sim.clock.now())

    def send_to(self, member_id: str, payload: bytes) -> None:
        """Best-effort app datagram to a live member (raises `UnknownMemberError` if it is not one)."""
        self.sim.dispatch(self, [self.membership.app_message(member_id, payload)])

    def request(self, member_id: str, payload: bytes, timeout_s: float, on_done: RequestDone) -> None:
        """App request over a stream; ``on_done`` is called once, in virtual time, with the reply or a failure."""
        address, data = self.membership.app_request(member_id, payload)
        membership = self.membership

        def done(reply: bytes | None) -> None:
            if self.membership is not membership:
                return  # this process restarted meanwhile
            if reply is None:
                on_done(None, "unreachable or timed out")
            else:
                try:
                    response = decode_app_response(reply, membership.config.max_stream_bytes)
                except PacketDecodeError as exc:
                    on_done(None, f"bad response: {exc}")
                else:
                    if response.error:
                        on_done(None, response.error)
                    else:
                        on_done(response.payload, None)
            self.sim.wake(self)  # the callback may have given the app new timers

        self.sim.network.request(self.address, address, data, timeout_s, self.sim.deferred(self, done))


class Simulation:
    def __init__(self, n: int = 0, config: Config | None = None, seed: int = 0, faults: FaultPlan | None = None,
                 delegate_factory: DelegateFactory | None = None) -> None:
        self.seed = seed
        self.config = config or Config.lan()
        self.clock = ManualClock()
        self.rng = random.Random(seed)
        self.network = MemoryNetwork(random.Random(self.rng.getrandbits(64)), self.clock, faults)
        self.network.on_resume = lambda address: self.wake(self._by_address[address])
        self.delegate_factory = delegate_factory
        self.nodes: list[SimNode] = []
        self.events: list[StatusEvent] = []
        self._by_address: dict[Address, SimNode] = {}
        self._scheduled: list[float] = []  # per node: the deadline its pending wake-up event is for
        for _ in range(n):
            self.add_node()

    # -- building the cluster ---------------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultPlan:
        return self.network.faults

    def add_node(self, node_id: str | None = None, meta: bytes = b"") -> SimNode:
        index = len(self.nodes)
        node = SimNode(self, index, node_id or f"node-{index:03d}", (f"10.0.{index // 250}.{index % 250 + 1}", 7946))
        self.nodes.append(node)
        self._scheduled.append(math.nan)
        self._by_address[node.address] = node
        self.network.register(node.address, lambda data, src: self._on_packet(node, data, src),
                              lambda data, src: self._on_request(node, data, src))
        self._boot(node, meta)
        return node

    def _boot(self, node: SimNode, meta: bytes) -> None:
        node.app = self.delegate_factory(node) if self.delegate_factory else Delegate()
        node.membership = Membership(self.config, node.id, node.address, random.Random(self.rng.getrandbits(64)),
                                     self.clock.now(), delegate=node.app, meta=meta)
        node.membership.observer = lambda old, new: self._observe(node, old, new)
        self.wake(node)

    def _observe(self, node: SimNode, old: Member | None, new: Member) -> None:
        if old is None or old.status != new.status or old.incarnation != new.incarnation:
            self.events.append(StatusEvent(self.clock.now(), node.id, new.id, new.status, new.incarnation))

    def join(self, node: SimNode, seeds: Iterable[SimNode]) -> None:
        self.dispatch(node, node.membership.join([s.address for s in seeds], self.clock.now()))

    def form_cluster(self, max_s: float = 120.0) -> float:
        """Everyone joins through node 0; runs until all agree on the full live set. Returns the time it took."""
        start = self.clock.now()
        for node in self.nodes[1:]:
            self.join(node, [self.nodes[0]])
        if not self.run_until_true(self.converged, max_s):
            raise SimulationError(f"cluster of {len(self.nodes)} did not converge in {max_s}s (seed {self.seed})")
        return self.clock.now() - start

    def bootstrap(self) -> None:
        """Make every node know every other as alive at once, as if the cluster had long converged.

        Much cheaper than `form_cluster` (no O(N^2) join gossip): for tests about what happens *after* formation.
        """
        now = self.clock.now()
        table = [n.membership.local_member for n in self.nodes]
        for node in self.nodes:
            node.membership.adopt(table, now)
            self.wake(node)

    def restart(self, node: SimNode, seeds: Iterable[SimNode]) -> None:
        """A crashed process comes back with the same id and address but a fresh state (incarnation 0)."""
        self.network.restore(node.address)
        self._boot(node, node.membership.local_member.meta)
        self.join(node, seeds)

    # -- faults (by node, for readable tests) -------------------------------------------------------------------------

    def crash(self, node: SimNode) -> None:
        self.network.crash(node.address)

    def pause(self, node: SimNode, duration_s: float) -> None:
        self.network.pause(node.address, duration_s)

    def partition(self, *groups: Iterable[SimNode]) -> None:
        self.faults.partition(*([n.address for n in group] for group in groups))

    def heal(self) -> None:
        self.faults.heal()

    # -- observations -------------------------------------------------------------------------------------------------

    def up_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.is_up and not n.membership.has_left]

    def view(self, observer: SimNode, subject: SimNode) -> MemberStatus | None:
        member = observer.membership.member(subject.id)
        return None if member is None else member.status

    def converged(self, expected: Iterable[SimNode] | None = None) -> bool:
        """Every up node sees exactly ``expected`` (default: the up nodes) as alive, nobody as suspect."""
        group = list(expected) if expected is not None else self.up_nodes()
        want = {n.id for n in group}
        for node in group:
            seen = {m.id for m in node.membership.members() if m.status is MemberStatus.ALIVE}
            if seen != want:
                return False
        return True

    def all_see(self, subject: SimNode, statuses: set[MemberStatus],
                observers: Iterable[SimNode] | None = None) -> bool:
        observers = [n for n in (observers or self.up_nodes()) if n is not subject]
        return all(self.view(o, subject) in statuses for o in observers)

    def false_deaths(self, exempt: Iterable[SimNode] = ()) -> list[StatusEvent]:
        """Every DEAD verdict about a node not in ``exempt`` (crashed or cut-off nodes a test expects to die)."""
        exempt_ids = {n.id for n in exempt}
        return [e for e in self.events if e.status is MemberStatus.DEAD and e.subject not in exempt_ids]

    # -- running ----------------------------------------------------------------------------------------------------

    def wake(self, node: SimNode) -> None:
        """Recompute when ``node`` next needs to run (call after poking its delegate from outside)."""
        deadline = node.membership.next_deadline()
        app_deadline = getattr(node.app, "next_deadline", None)
        if app_deadline is not None:
            extra = app_deadline()
            if extra is not None:
                deadline = min(deadline, extra)
        if deadline == self._scheduled[node.index] or deadline == math.inf:
            return  # the pending wake-up event still stands (or there is nothing to wake up for)
        self._scheduled[node.index] = deadline
        self.network.schedule(max(deadline, self.clock.now()), lambda: self._wake_up(node, deadline))

    def _wake_up(self, node: SimNode, deadline: float) -> None:
        if self._scheduled[node.index] != deadline:
            return  # superseded by a later wake()
        self._scheduled[node.index] = math.nan
        if node.is_up:
            self._tick(node)
        # a paused node is woken by on_resume; a crashed one never

    def run_for(self, seconds: float) -> None:
        self.run_until(self.clock.now() + seconds)

    def run_until(self, t_end: float) -> None:
        """Advance virtual time to ``t_end``, running every packet delivery and node timer on the way, in order."""
        network = self.network
        while (t := network.next_event_time()) is not None and t <= t_end:
            if t > self.clock.now():
                self.clock.set(t)
            network.run_due(t)
        self.clock.set(max(t_end, self.clock.now()))

    def run_until_true(self, predicate: Callable[[], bool], max_s: float, check_every_s: float = 0.1) -> bool:
        """Run until ``predicate()`` holds (checked every ``check_every_s``); False if ``max_s`` passes first."""
        deadline = self.clock.now() + max_s
        while not predicate():
            if self.clock.now() >= deadline:
                return False
            self.run_until(min(deadline, self.clock.now() + check_every_s))
        return True

    def _tick(self, node: SimNode) -> None:
        now = self.clock.now()
        self._send(node, node.membership.tick(now))
        app_tick = getattr(node.app, "tick", None)
        if app_tick is not None:
            app_tick(now)
        self.wake(node)

    def dispatch(self, node: SimNode, outgoing: list[Outgoing]) -> None:
        """Carry out what a node's state machine asked for, then reschedule it."""
        self._send(node, outgoing)
        self.wake(node)

    def _send(self, node: SimNode, outgoing: list[Outgoing]) -> None:
        membership = node.membership
        for item in outgoing:
            if isinstance(item, Packet):
                self.network.send_packet(node.address, item.address, item.data)
            else:
                def done(reply: bytes | None, request_id: int = item.request_id) -> None:
                    if node.membership is membership:
                        membership.stream_response(request_id, reply, self.clock.now())
                self.network.request(node.address, item.address, item.data, item.timeout_s,
                                     self.deferred(node, done))

    def deferred(self, node: SimNode, action: Callable[[bytes | None], None]) -> Callable[[bytes | None], None]:
        """Wrap a stream callback so it waits while the node is paused and vanishes if it crashed."""
        def run(reply: bytes | None) -> None:
            if node.address in self.faults.crashed:
                return
            if self.faults.is_paused(node.address, self.clock.now()):
                self.network.defer(node.address, lambda: run(reply))
                return
            action(reply)
        return run

    def _on_packet(self, node: SimNode, data: bytes, src: Address) -> None:
        try:
            out = node.membership.receive(data, src, self.clock.now())
        except PacketDecodeError as exc:
            node.decode_errors[exc.reason] = node.decode_errors.get(exc.reason, 0) + 1
            return
        self.dispatch(node, out)

    def _on_request(self, node: SimNode, data: bytes, src: Address) -> bytes | None:
        try:
            result = node.membership.receive_stream(data, src, self.clock.now())
        except PacketDecodeError as exc:
            node.decode_errors[exc.reason] = node.decode_errors.get(exc.reason, 0) + 1
            return None
        self.wake(node)
        if result.app_request is None:
            return result.reply
        request = result.app_request
        try:
            return encode_app_response(_run_to_completion(node.app.handle_request(request.payload, request.source)))
        except SimulationError:
            raise
        except Exception as exc:  # the app's failure becomes the requester's error, as over a real stream
            return encode_app_error(f"{type(exc).__name__}: {exc}")
        finally:
            self.wake(node)


def _run_to_completion(awaitable: Any) -> bytes:
    """Drive a coroutine that never really suspends (the simulator has no event loop)."""
    if isinstance(awaitable, bytes):
        return awaitable
    try:
        awaitable.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    awaitable.close()
    raise SimulationError("handle_request suspended; in the simulator it must complete without awaiting I/O")


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What `run_scenario` measured (times in virtual seconds unless the name says periods or rounds)."""

    n: int
    seed: int
    loss: float
    formation_s: float
    idle_bytes_per_member_per_s: float
    update_reach_all_s: float | None
    update_reach_all_rounds: float | None
    crash_to_first_suspicion_periods: float | None
    crash_to_dead_everywhere_s: float | None
    crash_to_dead_everywhere_periods: float | None
    false_deaths: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_scenario(n: int, config: Config | None = None, seed: int = 0, loss: float = 0.0,
                 idle_s: float = 30.0, max_wait_s: float = 300.0) -> ScenarioResult:
    """The benchmark scenario: form a cluster, measure idle traffic, spread an update, crash a node.

    ``loss`` is the datagram drop rate for the whole run (after formation).
    """
    config = config or Config.lan()
    sim = Simulation(n, config, seed)
    formation = sim.form_cluster(max_s=max_wait_s)
    sim.faults.drop_rate = loss
    sim.run_for(5.0)
    bytes_before = sim.network.stats.bytes_sent
    sim.run_for(idle_s)
    idle = (sim.network.stats.bytes_sent - bytes_before) / n / idle_s

    updater = sim.nodes[n // 2]
    start = sim.clock.now()
    updater.membership.update_meta(b"v2", start)
    sim.wake(updater)
    wanted = updater.membership.local_member.incarnation
    reached = sim.run_until_true(
        lambda: all((m := o.membership.member(updater.id)) is not None and m.incarnation >= wanted
                    for o in sim.nodes), max_wait_s, check_every_s=config.gossip_interval_s / 4)
    reach_s = sim.clock.now() - start if reached else None

    victim = sim.nodes[-1]
    sim.run_for(5.0)
    crash_at = sim.clock.now()
    sim.crash(victim)
    dead = sim.run_until_true(lambda: sim.all_see(victim, {MemberStatus.DEAD}), max_wait_s)
    dead_s = sim.clock.now() - crash_at if dead else None
    suspicions = [e.time for e in sim.events
                  if e.subject == victim.id and e.time >= crash_at and e.status is MemberStatus.SUSPECT]
    first = (min(suspicions) - crash_at) / config.probe_interval_s if suspicions else None
    return ScenarioResult(
        n=n, seed=seed, loss=loss, formation_s=formation, idle_bytes_per_member_per_s=idle,
        update_reach_all_s=reach_s,
        update_reach_all_rounds=None if reach_s is None else reach_s / config.gossip_interval_s,
        crash_to_first_suspicion_periods=first, crash_to_dead_everywhere_s=dead_s,
        crash_to_dead_everywhere_periods=None if dead_s is None else dead_s / config.probe_interval_s,
        false_deaths=len(sim.false_deaths(exempt=[victim])),
    )
