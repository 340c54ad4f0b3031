"""The membership state machine, message by message, with a tiny synchronous router and no simulator."""

import random

import pytest

from rumor.gossip.config import Config, suspicion_timeout_s
from rumor.gossip.delegate import Delegate
from rumor.gossip.errors import ConfigError, PacketDecodeError, PacketTooLargeError, UnknownMemberError
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.membership import Membership
from rumor.gossip.messages import (
    Ack,
    Alive,
    AppMessage,
    AppRequest,
    Dead,
    IndirectPing,
    Left,
    Ping,
    PushPull,
    RemoteState,
    Suspect,
    UserBroadcast,
    decode_packet,
    decode_stream,
    encode,
)
from rumor.gossip.outgoing import Outgoing, Packet, StreamRequest

CFG = Config.lan(push_pull_interval_s=0, reconnect_interval_s=0)


def addr(port: int) -> tuple[str, int]:
    return ("10.0.0.1", port)


class Recorder(Delegate):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.messages: list[tuple[bytes, str]] = []
        self.remote_states: list[tuple[bytes, bool]] = []
        self.outbox: list[bytes] = []

    def notify_join(self, member: Member) -> None:
        self.events.append(("join", member.id))

    def notify_leave(self, member: Member) -> None:
        self.events.append(("leave", member.id))

    def notify_update(self, member: Member) -> None:
        self.events.append(("update", member.id))

    def notify_message(self, payload: bytes, sender: str) -> None:
        self.messages.append((payload, sender))

    def local_state(self, join: bool) -> bytes:
        return b"state-join" if join else b"state"

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        self.remote_states.append((data, join))

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        out, used = [], 0
        while self.outbox and used + overhead + len(self.outbox[0]) <= limit:
            used += overhead + len(self.outbox[0])
            out.append(self.outbox.pop(0))
        return out


class Router:
    """Delivers everything at once, in order; addresses in ``down`` swallow traffic and fail streams."""

    def __init__(self, *nodes: Membership) -> None:
        self.nodes = {m.local_member.address: m for m in nodes}
        self.down: set[tuple[str, int]] = set()
        self.sent: list[tuple[tuple[str, int], Outgoing]] = []

    def run(self, src: tuple[str, int], outs: list[Outgoing], now: float) -> None:
        queue = [(src, o) for o in outs]
        while queue:
            frm, out = queue.pop(0)
            self.sent.append((frm, out))
            dst = self.nodes.get(out.address)
            reachable = dst is not None and out.address not in self.down and frm not in self.down
            if isinstance(out, Packet):
                if reachable:
                    queue += [(out.address, o) for o in dst.receive(out.data, frm, now)]  # type: ignore[union-attr]
                continue
            reply = dst.receive_stream(out.data, frm, now).reply if reachable else None  # type: ignore[union-attr]
            self.nodes[frm].stream_response(out.request_id, reply, now)

    def step(self, start: float, end: float, dt: float = 0.05) -> float:
        t = start
        while t <= end:
            for address, node in self.nodes.items():
                if address not in self.down:
                    self.run(address, node.tick(t), t)
            t = round(t + dt, 6)
        return t


def make(name: str, port: int, config: Config = CFG, **kwargs: object) -> Membership:
    return Membership(config, name, addr(port), random.Random(port), 0.0, **kwargs)  # type: ignore[arg-type]


def cluster(n: int, config: Config = CFG, delegates: bool = False) -> tuple[Router, list[Membership]]:
    nodes = [make(f"n{i}", 7000 + i, config, delegate=Recorder() if delegates else None) for i in range(n)]
    router = Router(*nodes)
    for node in nodes[1:]:
        router.run(node.local_member.address, node.join([nodes[0].local_member.address], 0.0), 0.0)
    router.step(0.0, 3.0)
    assert all(len(m.alive_members()) == n for m in nodes)
    return router, nodes


def kinds(packet: bytes) -> list[type]:
    return [type(m) for m in decode_packet(packet, 1400)]


def test_join_by_push_pull_exchanges_tables_and_app_state() -> None:
    a, b = make("a", 1, delegate=Recorder()), make("b", 2, delegate=Recorder())
    router = Router(a, b)
    router.run(a.local_member.address, a.join([b.local_member.address, a.local_member.address], 0.0), 0.0)
    assert a.join_status is not None and a.join_status.done and a.join_status.contacted == 1
    assert {m.id for m in a.members()} == {m.id for m in b.members()} == {"a", "b"}
    assert b._delegate.remote_states == [(b"state-join", True)]  # type: ignore[attr-defined]
    assert a._delegate.remote_states == [(b"state-join", True)]  # type: ignore[attr-defined]
    assert ("join", "b") in a._delegate.events  # type: ignore[attr-defined]


def test_join_retries_with_exponential_backoff_then_gives_up() -> None:
    a, b = make("a", 1), make("b", 2)
    router = Router(a, b)
    router.down.add(b.local_member.address)
    router.run(a.local_member.address, a.join([b.local_member.address], 0.0), 0.0)
    retry_times = []
    t = 0.0
    while not a.join_status.failed and t < 100:  # type: ignore[union-attr]
        t = a._join.retry_at if a._join.retry_at is not None else t + 1  # type: ignore[union-attr]
        retry_times.append(t)
        router.run(a.local_member.address, a.tick(t), t)
    assert a.join_status is not None and a.join_status.failed and a.join_status.attempts == CFG.join_max_attempts
    assert retry_times[:4] == [1.0, 3.0, 7.0, 15.0]


def test_a_probe_is_a_ping_answered_by_an_ack() -> None:
    router, (a, _) = cluster(2)
    router.sent.clear()
    router.step(3.05, 5.0)
    pings = [o for _, o in router.sent if isinstance(o, Packet) and Ping in kinds(o.data)]
    acks = [o for _, o in router.sent if isinstance(o, Packet) and Ack in kinds(o.data)]
    assert pings and len(acks) == len(pings)
    assert a.stats.probe_failures == 0 and a.awareness_score == 0


def test_a_silent_member_is_probed_indirectly_and_over_a_stream_then_suspected_then_dead() -> None:
    router, nodes = cluster(5)
    a, b = nodes[0], nodes[1]
    router.down.add(b.local_member.address)
    router.sent.clear()
    t = 3.05
    while a.member("n1").status is MemberStatus.ALIVE and t < 15:  # type: ignore[union-attr]
        t = router.step(t, t)
    from_a = [o for src, o in router.sent if src == a.local_member.address]
    indirect = [o for o in from_a if isinstance(o, Packet) and IndirectPing in kinds(o.data)]
    streams = [o for o in from_a if isinstance(o, StreamRequest) and o.address == b.local_member.address]
    assert a.member("n1").status is MemberStatus.SUSPECT  # type: ignore[union-attr]
    assert len(indirect) >= 3 and streams
    assert a.awareness_score == 0, "relays nacked, so the failure is not ours"
    suspected_at = a.member("n1").status_changed_at  # type: ignore[union-attr]
    router.step(t, t + 6 * suspicion_timeout_s(CFG, 5) + 1)
    dead = a.member("n1")
    assert dead is not None and dead.status is MemberStatus.DEAD
    assert suspicion_timeout_s(CFG, 5) <= dead.status_changed_at - suspected_at <= 6 * suspicion_timeout_s(CFG, 5)


def test_missing_nacks_raise_our_own_health_score() -> None:
    router, nodes = cluster(4)
    a = nodes[0]
    router.down.update(n.local_member.address for n in nodes[1:])
    router.step(3.05, 6.0)
    assert a.stats.probe_failures >= 1
    assert a.awareness_score >= 2


def test_a_ping_to_a_suspect_carries_the_suspicion_so_it_can_refute_at_once() -> None:
    router, (a, b) = cluster(2)
    a.receive(encode(Suspect("n1", 0, "n9")), addr(9), 3.0)
    assert a.member("n1").status is MemberStatus.SUSPECT  # type: ignore[union-attr]
    t, ping = 3.0, None
    while ping is None:
        t += 0.05
        ping = next((o for o in a.tick(t) if isinstance(o, Packet) and Ping in kinds(o.data)), None)
    assert kinds(ping.data)[:2] == [Suspect, Ping]
    router.run(a.local_member.address, [ping], t)
    assert b.local_member.incarnation == 1
    assert a.member("n1").status is MemberStatus.ALIVE  # type: ignore[union-attr]


def test_incarnation_precedence() -> None:
    rec = Recorder()
    m = make("me", 1, delegate=rec)

    def feed(*messages: object) -> MemberStatus | None:
        for message in messages:
            m.receive(encode(message), addr(2), 1.0)  # type: ignore[arg-type]
        x = m.member("x")
        return None if x is None else x.status

    assert feed(Suspect("x", 5, "y")) is None, "suspicion about an unknown member is ignored"
    assert feed(Alive("x", 1, addr(2), b"")) is MemberStatus.ALIVE
    assert feed(Suspect("x", 0, "y")) is MemberStatus.ALIVE, "older suspicion ignored"
    assert feed(Suspect("x", 1, "y")) is MemberStatus.SUSPECT, "suspect(i) beats alive(i)"
    assert feed(Alive("x", 1, addr(2), b"")) is MemberStatus.SUSPECT, "alive(i) does not clear suspect(i)"
    assert feed(Alive("x", 2, addr(2), b"")) is MemberStatus.ALIVE, "alive(i+1) beats suspect(i)"
    assert feed(Dead("x", 2, "y")) is MemberStatus.DEAD, "dead overrides at the same incarnation"
    assert feed(Alive("x", 2, addr(2), b""), Suspect("x", 3, "y")) is MemberStatus.DEAD
    assert feed(Left("x", 2)) is MemberStatus.LEFT, "a leave announcement upgrades dead to left"
    assert feed(Alive("x", 3, addr(3), b"new")) is MemberStatus.ALIVE, "a higher incarnation rejoins"
    assert feed(Alive("x", 4, addr(3), b"newer")) is MemberStatus.ALIVE
    assert rec.events == [("join", "x"), ("leave", "x"), ("join", "x"), ("update", "x")]


def test_only_the_member_itself_raises_its_incarnation_to_refute() -> None:
    m = make("me", 1)
    m.receive(encode(Alive("x", 0, addr(2), b"")), addr(2), 0.0)
    m.receive(encode(Suspect("me", 0, "x")), addr(2), 1.0)
    assert m.local_member.incarnation == 1 and m.stats.refutations == 1
    m.receive(encode(Dead("me", 4, "x")), addr(2), 1.0)
    assert m.local_member.incarnation == 5
    m.receive(encode(Alive("me", 9, addr(1), b"")), addr(2), 1.0)
    assert m.local_member.incarnation == 10, "someone believes a newer version of us: outbid it"
    m.receive(encode(Alive("me", 3, addr(1), b"")), addr(2), 1.0)
    assert m.local_member.incarnation == 10, "stale news about us is ignored"
    assert m.local_member.status is MemberStatus.ALIVE
    assert m.awareness_score > 0, "being suspected is a hint that we are the slow one"
    gossip = m.tick(1.2) + m.tick(1.4)
    assert any(Alive in kinds(p.data) for p in gossip if isinstance(p, Packet))


def test_push_pull_downgrades_a_remote_dead_to_suspect_but_refutes_about_ourselves() -> None:
    m = make("me", 1)
    m.receive(encode(Alive("x", 2, addr(2), b"")), addr(2), 0.0)
    table = (RemoteState("x", addr(2), 2, MemberStatus.DEAD, b""),
             RemoteState("me", addr(1), 5, MemberStatus.DEAD, b""),
             RemoteState("y", addr(3), 1, MemberStatus.SUSPECT, b""),
             RemoteState("z", addr(4), 1, MemberStatus.DEAD, b""))
    reply = m.receive_stream(encode(PushPull("peer", False, table, b"")), addr(9), 1.0)
    assert m.member("x").status is MemberStatus.SUSPECT  # type: ignore[union-attr]
    assert m.member("y").status is MemberStatus.SUSPECT  # type: ignore[union-attr]
    assert m.member("z") is None
    assert m.local_member.incarnation == 6
    answer = decode_stream(reply.reply, 1 << 20)  # type: ignore[arg-type]
    assert isinstance(answer, PushPull)
    assert RemoteState("me", addr(1), 6, MemberStatus.ALIVE, b"") in answer.states, "reply shows the refutation"


def test_a_restarted_member_learns_its_old_incarnation_and_bumps_above_it() -> None:
    router, (a, _) = cluster(2)
    a.receive(encode(Dead("n1", 7, "n0")), addr(9), 4.0)
    fresh = make("n1", 7001)
    router.nodes[fresh.local_member.address] = fresh
    router.run(fresh.local_member.address, fresh.join([a.local_member.address], 5.0), 5.0)
    assert fresh.local_member.incarnation == 8
    router.step(5.0, 6.0)
    assert a.member("n1") == Member("n1", addr(7001), 8, MemberStatus.ALIVE, b"", a.member("n1").status_changed_at)  # type: ignore[union-attr]


def test_graceful_leave_is_left_not_dead_and_is_not_refuted() -> None:
    router, nodes = cluster(3, delegates=True)
    leaver = nodes[2]
    router.run(leaver.local_member.address, leaver.leave(4.0), 4.0)
    router.step(4.0, 6.0)
    for node in nodes[:2]:
        assert node.member("n2").status is MemberStatus.LEFT  # type: ignore[union-attr]
        assert ("leave", "n2") in node._delegate.events  # type: ignore[attr-defined]
    assert leaver.local_member.status is MemberStatus.LEFT and leaver.local_member.incarnation == 0
    assert leaver.leave(6.0) == []


def test_dead_and_left_members_are_reaped_after_the_retention_period() -> None:
    config = Config.lan(push_pull_interval_s=0, reconnect_interval_s=0, dead_reap_after_s=30.0)
    m = make("me", 1, config)
    m.receive(encode(Alive("x", 0, addr(2), b"")), addr(2), 0.0)
    m.receive(encode(Dead("x", 0, "y")), addr(2), 10.0)
    m.tick(39.0)
    assert m.member("x") is not None
    m.tick(41.0)
    assert m.member("x") is None


def test_packets_never_exceed_max_packet_bytes() -> None:
    rec = Recorder()
    rng = random.Random(5)
    rec.outbox = [bytes(rng.randrange(1, 60)) for _ in range(300)]
    m = make("me", 1, delegate=rec)
    for i in range(400):
        m.receive(encode(Alive(f"member-{i:04d}-" + "x" * rng.randrange(0, 60), 1, addr(2),
                               bytes(rng.randrange(0, 200)))), addr(2), 0.0)
    packets = [p for t in range(200) for p in m.tick(t * 0.2) if isinstance(p, Packet)]
    assert len(packets) > 50
    assert max(len(p.data) for p in packets) <= CFG.max_packet_bytes
    assert max(len(p.data) for p in packets) > CFG.max_packet_bytes - 100, "packets are filled"
    assert len(rec.outbox) < 300, "delegate broadcasts share the leftover room"
    assert any(UserBroadcast in kinds(p.data) for p in packets)


def test_app_channel() -> None:
    rec = Recorder()
    a, b = make("a", 1), make("b", 2, delegate=rec)
    Router(a, b).run(a.local_member.address, a.join([b.local_member.address], 0.0), 0.0)
    packet = a.app_message("b", b"hi")
    assert packet.address == b.local_member.address
    b.receive(packet.data, a.local_member.address, 1.0)
    assert rec.messages == [(b"hi", "a")]
    address, data = a.app_request("b", b"q")
    assert address == b.local_member.address
    assert b.receive_stream(data, a.local_member.address, 1.0).app_request == AppRequest("a", b"q")
    with pytest.raises(UnknownMemberError):
        a.app_message("nobody", b"x")
    with pytest.raises(PacketTooLargeError):
        a.app_message("b", b"x" * 2000)
    assert AppMessage in kinds(packet.data)


def test_a_stalled_node_does_not_convict_for_what_it_could_not_hear() -> None:
    m = make("me", 1)
    m.receive(encode(Alive("x", 0, addr(2), b"")), addr(2), 0.0)
    m.receive(encode(Suspect("x", 0, "y")), addr(2), 0.5)
    m.tick(0.5)
    deadline = m._suspicions["x"].deadline
    m.tick(deadline + 5.0)  # woke up long after everything was due
    assert m.stats.stalls == 1
    assert m.member("x").status is MemberStatus.SUSPECT  # type: ignore[union-attr]
    m.receive(encode(Alive("x", 1, addr(2), b"")), addr(2), deadline + 5.1)
    assert m.member("x").status is MemberStatus.ALIVE  # type: ignore[union-attr]


def test_next_deadline_is_when_tick_has_work() -> None:
    m = make("me", 1)
    before = m.next_deadline()
    assert m.tick(before - 1e-6) == []
    assert m.next_deadline() == before
    m.tick(before)
    assert m.next_deadline() > before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"probe_interval_s": 0}, "probe_interval_s"), ({"probe_timeout_s": 2.0}, "probe_timeout_s"),
     ({"indirect_checks": -1}, "indirect_checks"), ({"max_packet_bytes": 100}, "max_packet_bytes"),
     ({"gossip_nodes": 1.5}, "gossip_nodes"), ({"push_pull_interval_s": float("nan")}, "push_pull_interval_s")],
)
def test_config_is_validated(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.lan(**overrides)
    assert info.value.field == field


def test_presets_are_valid_and_distinct() -> None:
    assert Config.wan().probe_interval_s > Config.lan().probe_interval_s
    assert Config.local().probe_timeout_s < Config.lan().probe_timeout_s
    assert Config.lan().describe()["max_packet_bytes"] == 1400


def test_adopt_takes_members_quietly_and_respects_incarnations() -> None:
    m = make("me", 1)
    m.receive(encode(Alive("x", 3, addr(2), b"")), addr(2), 0.0)
    queued = len(m._queue)
    m.adopt([Member("x", addr(2), 1, MemberStatus.ALIVE), Member("y", addr(3), 0, MemberStatus.ALIVE),
             Member("me", addr(9), 7, MemberStatus.DEAD)], 5.0)
    assert m.member("x").incarnation == 3  # type: ignore[union-attr]
    assert m.member("y") == Member("y", addr(3), 0, MemberStatus.ALIVE, b"", 5.0)
    assert m.local_member.address == addr(1) and m.local_member.incarnation == 0
    assert len(m._queue) == queued, "adopting is not news to gossip"
    assert m.num_alive() == 3


def test_datagram_only_messages_on_a_stream_are_rejected() -> None:
    m = make("me", 1)
    with pytest.raises(PacketDecodeError) as info:
        m.receive_stream(encode(Ack(1)), addr(2), 0.0)
    assert info.value.reason == "unexpected_stream_message"
    m.receive(encode(PushPull("x", False, (), b"")), addr(2), 0.0)
    assert m.stats.dropped == {"stream_message_in_packet": 1}
