"""One node id, one live process: claims to a live id from another address are refused, counted and reported.

Message-level rules on a lone `Membership` first, then whole clusters in the simulator (virtual time, seeded).
"""

import random

from rumor.gossip.config import Config
from rumor.gossip.id_conflict import ConflictingClaim
from rumor.gossip.member import MemberStatus
from rumor.gossip.membership import Membership
from rumor.gossip.messages import Alive, Dead, IdConflict, PushPull, RemoteState, Suspect, decode_stream, encode
from rumor.gossip.outgoing import StreamRequest
from rumor.gossip.simulation import SimNode, Simulation

CFG = Config.lan(push_pull_interval_s=0, reconnect_interval_s=0)
ME, X, NEW, PEER = ("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.9", 9), ("10.0.0.5", 5)


def lone(claims: list[ConflictingClaim]) -> Membership:
    m = Membership(CFG, "me", ME, random.Random(1), 0.0)
    m.on_conflict = claims.append
    m.receive(encode(Alive("x", 1, X, b"")), X, 0.0)
    return m


def test_an_alive_at_a_new_address_is_refused_while_the_known_one_lives_and_allowed_once_it_is_dead() -> None:
    claims: list[ConflictingClaim] = []
    m = lone(claims)
    m.receive(encode(Alive("x", 5, NEW, b"")), NEW, 1.0)
    assert claims == [ConflictingClaim("x", X, NEW, "gossip")]
    assert m.member("x").address == X and m.member("x").incarnation == 1  # type: ignore[union-attr]
    m.receive(encode(Alive("x", 1, NEW, b"")), NEW, 1.0)
    assert len(claims) == 2, "the same incarnation at another address is a second process too"
    m.receive(encode(Alive("x", 0, NEW, b"")), NEW, 1.0)
    assert len(claims) == 2, "an older incarnation is stale news, ignored as before"
    m.receive(encode(Suspect("x", 1, "y")), PEER, 2.0)
    m.receive(encode(Alive("x", 6, NEW, b"")), NEW, 2.0)
    assert len(claims) == 3 and m.member("x").address == X, "a suspect is still alive"  # type: ignore[union-attr]
    m.receive(encode(Dead("x", 1, "y")), PEER, 3.0)
    m.receive(encode(Alive("x", 2, NEW, b"")), NEW, 4.0)
    assert len(claims) == 3, "a dead member's id may be reclaimed from a new address"
    assert m.member("x").address == NEW and m.member("x").status is MemberStatus.ALIVE  # type: ignore[union-attr]
    assert m.stats.dropped["id_conflict"] == 3


def test_an_alive_claiming_our_id_elsewhere_is_refused_without_an_incarnation_war() -> None:
    claims: list[ConflictingClaim] = []
    m = lone(claims)
    m.receive(encode(Alive("me", 3, NEW, b"")), NEW, 1.0)
    assert claims == [ConflictingClaim("me", ME, NEW, "gossip")]
    assert m.local_member.incarnation == 0 and m.stats.refutations == 0
    # refuting suspicion, and outbidding news about ourselves at our own address, still work
    m.receive(encode(Suspect("me", 0, "x")), X, 2.0)
    assert m.local_member.incarnation == 1
    m.receive(encode(Alive("me", 4, ME, b"")), X, 2.0)
    assert m.local_member.incarnation == 5 and m.stats.refutations == 2 and len(claims) == 1


def test_table_rows_about_another_process_with_a_live_id_are_skipped() -> None:
    claims: list[ConflictingClaim] = []
    m = lone(claims)
    table = (RemoteState("peer", PEER, 0, MemberStatus.ALIVE, b""),
             RemoteState("x", NEW, 7, MemberStatus.LEFT, b""),
             RemoteState("me", NEW, 0, MemberStatus.SUSPECT, b""))
    reply = m.receive_stream(encode(PushPull("peer", False, table, b"")), PEER, 1.0)
    assert isinstance(decode_stream(reply.reply, 1 << 20), PushPull)  # type: ignore[arg-type]
    assert m.member("x").status is MemberStatus.ALIVE, "x at X did not leave: another process did"  # type: ignore[union-attr]
    assert m.local_member.incarnation == 0, "a suspicion of another process is not ours to refute"
    assert [c.node for c in claims] == ["x", "me"]
    # a dead row about us at another address is refuted: how a node restarted on a new address reclaims its id
    table = (RemoteState("peer", PEER, 0, MemberStatus.ALIVE, b""), RemoteState("me", NEW, 4, MemberStatus.DEAD, b""))
    m.receive_stream(encode(PushPull("peer", False, table, b"")), PEER, 2.0)
    assert m.local_member.incarnation == 5 and len(claims) == 2


def test_a_push_pull_from_a_sender_whose_id_is_alive_elsewhere_merges_nothing_and_says_why() -> None:
    claims: list[ConflictingClaim] = []
    m = lone(claims)
    table = (RemoteState("x", NEW, 0, MemberStatus.ALIVE, b""), RemoteState("z", PEER, 0, MemberStatus.ALIVE, b""))
    reply = m.receive_stream(encode(PushPull("x", True, table, b"")), NEW, 1.0)
    assert decode_stream(reply.reply, 1 << 20) == IdConflict("x", X)  # type: ignore[arg-type]
    assert m.member("z") is None, "nothing of the refused table is merged"
    assert claims == [ConflictingClaim("x", X, NEW, "push_pull", join=True)]
    assert "refused a join from 10.0.0.9:9: node id x is already in use by 10.0.0.2:2" in claims[0].describe()
    reply = m.receive_stream(encode(PushPull("me", True, (RemoteState("me", NEW, 0, MemberStatus.ALIVE, b""),), b"")),
                             NEW, 1.0)
    assert decode_stream(reply.reply, 1 << 20) == IdConflict("me", ME)  # type: ignore[arg-type]


def test_a_join_fails_at_once_on_an_id_conflict_or_when_every_seed_refuses_for_good() -> None:
    m = Membership(CFG, "a", ME, random.Random(1), 0.0)
    requests = [o for o in m.join([X, PEER], 0.0) if isinstance(o, StreamRequest)]
    m.stream_response(requests[0].request_id, None, 0.1, refused=True)
    m.stream_response(requests[1].request_id, None, 0.1)  # a timeout: may work next time
    assert m.join_status is not None and not m.join_status.failed and m._join.retry_at is not None  # type: ignore[union-attr]
    requests = [o for o in m.tick(m._join.retry_at) if isinstance(o, StreamRequest)]  # type: ignore[union-attr]
    for request in requests:
        m.stream_response(request.request_id, None, 1.1, refused=True)
    assert m.join_status.failed and m.join_status.attempts == 2 and m.join_status.conflict is None

    claims: list[ConflictingClaim] = []
    m = Membership(CFG, "a", ME, random.Random(1), 0.0)
    m.on_conflict = claims.append
    [request] = [o for o in m.join([X], 0.0) if isinstance(o, StreamRequest)]
    m.stream_response(request.request_id, encode(IdConflict("a", NEW)), 0.1)
    assert m.join_status is not None and m.join_status.failed and m.join_status.conflict == NEW
    assert m.join_status.attempts == 1 and claims == [], "the joiner hears of it as its join's error"


# -- whole clusters ---------------------------------------------------------------------------------------------------


def alive_at(sim: Simulation, observers: list[SimNode], node_id: str, address: tuple[str, int]) -> bool:
    return all((m := o.membership.member(node_id)) is not None and m.address == address
               and m.status is MemberStatus.ALIVE for o in observers)


def test_a_second_process_with_a_live_id_is_refused_wherever_it_joins() -> None:
    seed = 11
    sim = Simulation(4, Config.lan(), seed)
    sim.bootstrap()
    holder = sim.nodes[1]
    twin = sim.add_node(holder.id)
    for through in (holder, sim.nodes[2]):
        sim.join(twin, [through])
        assert sim.run_until_true(lambda: twin.membership.join_status.failed, 30.0), f"seed={seed}"  # type: ignore[union-attr]
        status = twin.membership.join_status
        assert status is not None and status.conflict == holder.address and status.attempts == 1, f"seed={seed}"
        assert through.membership.stats.dropped["id_conflict"] >= 1
    sim.run_for(60.0)
    assert alive_at(sim, sim.nodes[:4], holder.id, holder.address), f"seed={seed}"
    assert [m.id for m in twin.membership.members()] == [holder.id], "the twin merged nobody's table"
    assert holder.membership.local_member.incarnation == 0, "no incarnation war"


def test_a_node_restarted_on_a_new_address_gets_its_id_back_once_the_old_process_is_dead() -> None:
    seed = 12
    sim = Simulation(4, Config.lan(), seed)
    sim.bootstrap()
    old = sim.nodes[3]
    sim.crash(old)
    reborn = sim.add_node(old.id)
    sim.join(reborn, [sim.nodes[0]])
    assert sim.run_until_true(lambda: reborn.membership.join_status.failed, 30.0), f"seed={seed}"  # type: ignore[union-attr]
    assert reborn.membership.join_status.conflict == old.address  # type: ignore[union-attr]
    assert sim.run_until_true(lambda: sim.all_see(old, {MemberStatus.DEAD}, sim.nodes[:3]), 120.0), f"seed={seed}"
    sim.join(reborn, [sim.nodes[0]])
    assert sim.run_until_true(lambda: alive_at(sim, sim.nodes[:3], old.id, reborn.address), 60.0), f"seed={seed}"
    assert reborn.membership.join_status.done  # type: ignore[union-attr]


def test_a_node_restarted_on_its_own_address_rejoins_at_once() -> None:
    seed = 13
    sim = Simulation(4, Config.lan(), seed)
    sim.bootstrap()
    node = sim.nodes[2]
    sim.crash(node)
    sim.restart(node, [sim.nodes[0]])  # before anyone noticed the crash
    assert sim.run_until_true(lambda: node.membership.join_status.done, 10.0), f"seed={seed}"  # type: ignore[union-attr]
    sim.run_for(30.0)
    assert alive_at(sim, sim.nodes, node.id, node.address), f"seed={seed}"
    assert all(n.membership.stats.dropped.get("id_conflict", 0) == 0 for n in sim.nodes)


def test_no_left_verdict_about_a_twin_lands_on_the_live_holder() -> None:
    seed = 14
    sim = Simulation(3, Config.lan(), seed)
    sim.bootstrap()
    first, holder, other = sim.nodes
    twin = sim.add_node(holder.id)
    # a table saying the id left, from the twin's address: that verdict is about the twin, not the holder
    table = (RemoteState(other.id, other.address, 0, MemberStatus.ALIVE, b""),
             RemoteState(holder.id, twin.address, 9, MemberStatus.LEFT, b""))
    first.membership.receive_stream(encode(PushPull(other.id, False, table, b"")), other.address, sim.clock.now())
    assert alive_at(sim, [first], holder.id, holder.address)
    assert first.membership.member(holder.id).incarnation == 0  # type: ignore[union-attr]
    assert first.membership.stats.dropped["id_conflict"] == 1
    sim.run_for(30.0)
    assert alive_at(sim, [first, other], holder.id, holder.address), f"seed={seed}"
    assert holder.membership.local_member.incarnation == 0, "nothing for the holder to refute"
