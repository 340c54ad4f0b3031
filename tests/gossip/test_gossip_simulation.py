"""Whole clusters in virtual time: joins, crashes, partitions, pauses, loss and stalls, reproducible from a seed."""

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from rumor.gossip.clock import Address, ManualClock
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.sim_network import FaultPlan, MemoryNetwork
from rumor.gossip.simulation import SimNode, Simulation, run_scenario

GONE = {MemberStatus.DEAD}
SIZES = [5, 50, pytest.param(200, marks=pytest.mark.slow)]


def formed(n: int, seed: int, config: Config | None = None, faults: FaultPlan | None = None,
           join: bool = False) -> Simulation:
    """A converged cluster: by real joins through node 0, or (cheaper, for tests about later events) bootstrapped."""
    sim = Simulation(n, config or Config.lan(), seed, faults)
    if join:
        sim.form_cluster()
    else:
        sim.bootstrap()
    return sim


@pytest.mark.parametrize("n", [5, 50])
def test_a_cluster_forms_by_joining_through_one_seed(n: int) -> None:
    seed = 50 + n
    sim = formed(n, seed, join=True)
    assert sim.converged(), f"seed={seed}"
    assert all(x.membership.join_status is not None for x in sim.nodes[1:])


@pytest.mark.parametrize("n", [5, 50, 200])
def test_every_member_learns_a_join(n: int) -> None:
    seed = 100 + n
    sim = formed(n, seed)
    newcomer = sim.add_node("newcomer")
    sim.join(newcomer, [sim.nodes[n // 2]])
    start = sim.clock.now()
    assert sim.run_until_true(lambda: all(sim.view(o, newcomer) is MemberStatus.ALIVE for o in sim.nodes[:n]),
                              30.0), f"seed={seed}"
    assert newcomer.membership.join_status is not None and newcomer.membership.join_status.done
    assert len(newcomer.membership.alive_members()) == n + 1, f"seed={seed}"
    print(f"n={n}: join known everywhere after {sim.clock.now() - start:.2f}s virtual")


@pytest.mark.parametrize("n", SIZES)
def test_a_crashed_member_is_declared_dead_everywhere(n: int) -> None:
    seed = 200 + n
    sim = formed(n, seed)
    victim = sim.nodes[1]
    sim.crash(victim)
    assert sim.run_until_true(lambda: sim.all_see(victim, GONE), 120.0), f"seed={seed}"
    assert sim.false_deaths(exempt=[victim]) == [], f"seed={seed}"


@pytest.mark.parametrize("preset", [Config.lan, Config.wan, Config.local])
def test_every_preset_detects_a_crash_without_false_deaths(preset: object) -> None:
    config = preset()  # type: ignore[operator]
    sim = formed(8, 250, config, FaultPlan(drop_rate=0.02))
    sim.run_for(10 * config.probe_interval_s)
    victim = sim.nodes[3]
    sim.crash(victim)
    assert sim.run_until_true(lambda: sim.all_see(victim, GONE), 60 * config.probe_interval_s, 0.5), "seed=250"
    assert sim.false_deaths(exempt=[victim]) == [], "seed=250"


@pytest.mark.parametrize("n", SIZES)
def test_a_partitioned_minority_is_suspected_then_dead_and_rejoins_after_heal(n: int) -> None:
    seed = 300 + n
    config = Config.lan(reconnect_interval_s=10.0)
    sim = formed(n, seed, config)
    minority = sim.nodes[-max(1, n // 5):]
    majority = [x for x in sim.nodes if x not in minority]
    sim.partition(majority, minority)
    start = sim.clock.now()
    assert sim.run_until_true(lambda: all(sim.view(majority[0], m) is not MemberStatus.ALIVE for m in minority),
                              30.0), f"seed={seed}"
    assert all(e.status is not MemberStatus.DEAD for e in sim.events if e.time >= start and
               e.subject in {m.id for m in minority} and e.time < start + 1.0), "suspect before dead"
    assert sim.run_until_true(lambda: all(sim.all_see(m, GONE, majority) for m in minority), 120.0, 1.0), f"seed={seed}"
    assert sim.run_until_true(lambda: all(sim.all_see(m, GONE, minority) for m in majority), 200.0, 1.0), f"seed={seed}"
    sim.heal()
    assert sim.run_until_true(sim.converged, 180.0), f"seed={seed}: did not merge after heal"
    for node in minority:
        assert node.membership.local_member.incarnation > 0, "rejoining took a refutation"
    deaths = {e.subject for e in sim.false_deaths()}
    assert deaths <= {x.id for x in sim.nodes}


@pytest.mark.parametrize("n", [5, 50])
def test_a_paused_member_that_resumes_refutes_its_suspicion(n: int) -> None:
    seed = 400 + n
    sim = formed(n, seed)
    sleeper = sim.nodes[2]
    others = [x for x in sim.nodes if x is not sleeper]
    sim.pause(sleeper, 4.0)
    start = sim.clock.now()
    assert sim.run_until_true(lambda: any(sim.view(o, sleeper) is MemberStatus.SUSPECT for o in others), 4.0), \
        f"seed={seed}: nobody noticed the pause"
    assert sim.run_until_true(lambda: sim.all_see(sleeper, {MemberStatus.ALIVE}), 30.0), f"seed={seed}"
    assert sleeper.membership.local_member.incarnation >= 1
    assert sim.false_deaths() == [], f"seed={seed}"
    assert sim.clock.now() - start < 30


@pytest.mark.parametrize(("n", "minutes"), [(50, 10), pytest.param(200, 10, marks=pytest.mark.slow)])
def test_no_false_deaths_with_five_percent_packet_loss(n: int, minutes: int) -> None:
    seed = 500 + n
    sim = formed(n, seed, faults=FaultPlan(duplicate_rate=0.01, latency_s=(0.001, 0.02)))
    sim.faults.drop_rate = 0.05
    sim.run_for(minutes * 60.0)
    assert sim.false_deaths() == [], f"seed={seed}"
    assert sim.converged(), f"seed={seed}"
    suspicions = sum(x.membership.stats.suspicions for x in sim.nodes)
    print(f"n={n}: {suspicions} suspicions raised, all refuted; {sim.network.stats.dropped} packets dropped")


def test_without_the_stream_fallback_lossy_probes_are_suspected_and_refuted_not_killed() -> None:
    seed = 550
    config = Config.lan(stream_fallback_probe=False)
    sim = formed(30, seed, config, FaultPlan(duplicate_rate=0.01, latency_s=(0.001, 0.02)))
    sim.faults.drop_rate = 0.05
    sim.run_for(180.0)
    refutations = sum(x.membership.stats.refutations for x in sim.nodes)
    assert refutations > 0, f"seed={seed}: the scenario should exercise suspicion and refutation"
    assert sim.false_deaths() == [], f"seed={seed}"
    assert sim.converged(), f"seed={seed}"


def test_a_member_that_stalls_for_two_seconds_at_a_time_causes_no_false_deaths() -> None:
    seed = 600
    sim = formed(20, seed)
    staller = sim.nodes[3]
    for _ in range(30):
        sim.pause(staller, 2.0)
        sim.run_for(2.0 + 3.0)
    assert [e for e in sim.false_deaths() if e.observer == staller.id] == [], f"seed={seed}"
    assert sim.false_deaths() == [], f"seed={seed}"
    assert staller.membership.stats.stalls >= 1


def test_runs_are_reproducible_from_the_seed() -> None:
    def run(seed: int) -> list[tuple[float, str, str, int, int]]:
        sim = formed(12, seed, faults=FaultPlan(drop_rate=0.1, duplicate_rate=0.05, latency_s=(0.001, 0.05)))
        sim.crash(sim.nodes[4])
        sim.run_for(20.0)
        return [(round(e.time, 9), e.observer, e.subject, e.status, e.incarnation) for e in sim.events]

    assert run(7) == run(7)
    assert run(7) != run(8)


class Chatty(Delegate):
    """A stand-in for the replication layer: its own timer, broadcasts, point-to-point messages and requests."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.heard: list[tuple[bytes, str]] = []
        self.sends_left = 20  # the app's own transmit limit
        self.replies: list[tuple[bytes | None, str | None]] = []
        self.next_at: float | None = 5.0
        self.joined: list[str] = []

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        if self.sends_left <= 0:
            return []
        self.sends_left -= 1
        return [f"hello from {self.node.id}".encode()]

    def notify_message(self, payload: bytes, sender: str) -> None:
        self.heard.append((payload, sender))

    def notify_join(self, member: Member) -> None:
        self.joined.append(member.id)

    async def handle_request(self, payload: bytes, sender: str) -> bytes:
        return payload.upper() + b" for " + sender.encode()

    def next_deadline(self) -> float | None:
        return self.next_at

    def tick(self, now: float) -> None:
        if self.next_at is not None and now >= self.next_at:
            self.next_at = None
            peer = "node-000" if self.node.id != "node-000" else "node-001"
            self.node.send_to(peer, b"direct")
            self.node.request(peer, b"ping?", 1.0, lambda reply, err: self.replies.append((reply, err)))


def test_applications_ride_on_the_simulation() -> None:
    sim = Simulation(4, Config.lan(), seed=9, delegate_factory=Chatty)
    sim.form_cluster()
    assert all(len(x.app.joined) == 3 for x in sim.nodes)  # type: ignore[attr-defined]
    sim.run_for(10.0)
    apps = [x.app for x in sim.nodes]
    assert all(isinstance(a, Chatty) for a in apps)
    for app in apps:
        heard_broadcasts = {p for p, _ in app.heard if p.startswith(b"hello")}  # type: ignore[attr-defined]
        assert len(heard_broadcasts) == 3
        assert app.replies == [(b"PING? for " + app.node.id.encode(), None)]  # type: ignore[attr-defined]
    assert (b"direct", "node-001") in apps[0].heard  # type: ignore[attr-defined]
    sim.crash(sim.nodes[0])
    sim.nodes[1].request("node-000", b"x", 1.0, lambda r, e: apps[1].replies.append((r, e)))  # type: ignore[attr-defined]
    sim.run_for(2.0)
    assert apps[1].replies[-1] == (None, "unreachable or timed out")  # type: ignore[attr-defined]


def test_a_restarted_member_rejoins_with_a_higher_incarnation() -> None:
    seed = 700
    sim = formed(10, seed)
    node = sim.nodes[5]
    sim.crash(node)
    assert sim.run_until_true(lambda: sim.all_see(node, GONE), 60.0), f"seed={seed}"
    old = sim.nodes[0].membership.member(node.id).incarnation  # type: ignore[union-attr]
    sim.restart(node, [sim.nodes[0]])
    assert sim.run_until_true(sim.converged, 30.0), f"seed={seed}"
    assert node.membership.local_member.incarnation > old


def test_graceful_leave_spreads_as_left() -> None:
    sim = formed(10, 800)
    leaver = sim.nodes[4]
    sim.dispatch(leaver, leaver.membership.leave(sim.clock.now()))
    assert sim.run_until_true(lambda: sim.all_see(leaver, {MemberStatus.LEFT}), 10.0)
    assert sim.false_deaths() == []


def test_one_way_loss_is_survived_through_indirect_probes() -> None:
    seed = 900
    sim = formed(8, seed)
    a, b = sim.nodes[0], sim.nodes[1]
    sim.faults.block(a.address, b.address)
    sim.run_for(60.0)
    assert sim.false_deaths() == [], f"seed={seed}"


def test_run_scenario_reports_the_bench_figures() -> None:
    result = run_scenario(5, Config.lan(), seed=3, idle_s=10.0)
    assert result.false_deaths == 0
    assert result.crash_to_dead_everywhere_s is not None and result.crash_to_dead_everywhere_s < 30
    assert result.crash_to_first_suspicion_periods is not None and result.crash_to_first_suspicion_periods < 10
    assert result.update_reach_all_rounds is not None
    assert 0 < result.idle_bytes_per_member_per_s < 1000
    assert set(result.as_dict()) >= {"n", "seed", "false_deaths"}


# -- the network itself ------------------------------------------------------------------------------------------

A, B, C = ("10.9.0.1", 1), ("10.9.0.2", 1), ("10.9.0.3", 1)


def network(faults: FaultPlan, seed: int = 1) -> tuple[MemoryNetwork, ManualClock, dict[Address, list[bytes]]]:
    clock = ManualClock()
    net = MemoryNetwork(random.Random(seed), clock, faults)
    inbox: dict[Address, list[bytes]] = {A: [], B: [], C: []}
    for address in inbox:
        net.register(address, lambda data, src, a=address: inbox[a].append(data), lambda data, src: data + b"!")
    return net, clock, inbox


def drain(net: MemoryNetwork, clock: ManualClock, until: float = 10.0) -> None:
    while (t := net.next_event_time()) is not None and t <= until:
        clock.set(max(t, clock.now()))
        net.run_due(t)


def test_latency_reorders_and_the_rates_are_honoured() -> None:
    net, clock, inbox = network(FaultPlan(drop_rate=0.2, duplicate_rate=0.1, latency_s=(0.001, 0.5)))
    for i in range(2000):
        net.send_packet(A, B, i.to_bytes(2, "big"))
    drain(net, clock)
    got = [int.from_bytes(d, "big") for d in inbox[B]]
    assert got != sorted(got), "random latency reorders"
    assert 0.15 < net.stats.dropped / 2000 < 0.25
    assert 0.05 < net.stats.duplicated / 2000 < 0.15
    assert len(got) == 2000 - net.stats.dropped + net.stats.duplicated


def test_partitions_one_way_blocks_and_heal() -> None:
    faults = FaultPlan()
    net, clock, inbox = network(faults)
    faults.partition([A], [B])
    faults.block(A, C)
    for dst in (B, C):
        net.send_packet(A, dst, b"a")
    net.send_packet(C, A, b"c")
    drain(net, clock)
    assert inbox == {A: [b"c"], B: [], C: []}
    faults.heal()
    net.send_packet(A, B, b"again")
    drain(net, clock)
    assert inbox[B] == [b"again"]


def test_a_paused_node_gets_its_backlog_in_order_when_it_resumes() -> None:
    net, clock, inbox = network(FaultPlan(latency_s=(0.01, 0.01)))
    net.pause(B, 5.0)
    for i in range(5):
        net.send_packet(A, B, bytes([i]))
    drain(net, clock, until=4.9)
    assert inbox[B] == []
    drain(net, clock)
    assert inbox[B] == [bytes([i]) for i in range(5)]


def test_streams_answer_reliably_or_time_out() -> None:
    faults = FaultPlan(drop_rate=1.0)
    net, clock, _ = network(faults)
    replies: list[tuple[float, bytes | None]] = []
    net.request(A, B, b"q", 2.0, lambda r: replies.append((clock.now(), r)))
    net.crash(C)
    net.request(A, C, b"q", 2.0, lambda r: replies.append((clock.now(), r)))
    drain(net, clock)
    assert replies[0][1] == b"q!" and replies[0][0] < 1.0, "datagram loss does not touch streams"
    assert replies[1] == (2.0, None)
    assert net.stats.stream_failures == 1


# -- stateful: any mix of faults, once healed, converges ------------------------------------------------------------


class ClusterUnderFaults(RuleBasedStateMachine):
    """Partition, heal, pause, crash and restart at random; after healing, every live member agrees again."""

    def __init__(self) -> None:
        super().__init__()
        self.sim = Simulation(6, Config.lan(reconnect_interval_s=5.0, push_pull_interval_s=10.0), seed=0)
        self.sim.bootstrap()
        self.crashed: list[SimNode] = []

    @initialize(seed=st.integers(0, 2**32))
    def reseed(self, seed: int) -> None:
        self.sim = Simulation(6, Config.lan(reconnect_interval_s=5.0, push_pull_interval_s=10.0), seed=seed)
        self.sim.bootstrap()

    @rule(split=st.integers(1, 5))
    def partition(self, split: int) -> None:
        self.sim.partition(self.sim.nodes[:split], self.sim.nodes[split:])

    @rule()
    def heal(self) -> None:
        self.sim.heal()

    @rule(index=st.integers(0, 5), seconds=st.floats(0.5, 6.0))
    def pause(self, index: int, seconds: float) -> None:
        node = self.sim.nodes[index]
        if node.is_up:
            self.sim.pause(node, seconds)

    @rule(index=st.integers(1, 5))
    def crash(self, index: int) -> None:
        node = self.sim.nodes[index]
        if not self.crashed and node.address not in self.sim.faults.crashed:
            self.sim.crash(node)
            self.crashed.append(node)

    @rule()
    def restart(self) -> None:
        if self.crashed:
            self.sim.restart(self.crashed.pop(), [self.sim.nodes[0]])

    @rule(seconds=st.floats(0.5, 20.0))
    def run(self, seconds: float) -> None:
        self.sim.run_for(seconds)

    def teardown(self) -> None:
        self.sim.heal()
        for node in self.crashed:
            self.sim.restart(node, [self.sim.nodes[0]])
        up = self.sim.nodes
        assert self.sim.run_until_true(lambda: self.sim.converged(up), 300.0, 1.0), f"seed={self.sim.seed}"


TestClusterUnderFaults = ClusterUnderFaults.TestCase
TestClusterUnderFaults.settings = settings(max_examples=15, stateful_step_count=15, deadline=None)
