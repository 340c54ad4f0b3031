"""Force-leave (Serf's semantics): only a member the cluster declared dead can be made left; the verdict spreads by
gossip, and a member that comes back refutes it like any other."""

from __future__ import annotations

import pytest
from test_membership import Router, cluster

from rumor.gossip.errors import MemberNotGoneError, UnknownMemberError
from rumor.gossip.member import MemberStatus
from rumor.gossip.membership import Membership


def status(node: Membership, member_id: str) -> MemberStatus:
    member = node.member(member_id)
    assert member is not None
    return member.status


def step_until(router: Router, t: float, done: object, limit_s: float = 60.0) -> float:
    """Steps the router from ``t`` until ``done()`` holds (a bounded number of steps of simulated time)."""
    end = t + limit_s
    while not done() and t < end:  # type: ignore[operator]
        t = router.step(t, t)
    assert done(), f"not reached after {limit_s} s of simulated time"  # type: ignore[operator]
    return t


def test_a_dead_member_forced_to_leave_is_left_everywhere() -> None:
    router, nodes = cluster(4)
    first, gone = nodes[0], nodes[3]
    router.down.add(gone.local_member.address)
    t = step_until(router, 3.05, lambda: all(status(n, "n3") is MemberStatus.DEAD for n in nodes[:3]))

    dead_incarnation = first.member("n3").incarnation  # type: ignore[union-attr]
    left = first.force_leave("n3", t)
    assert left.status is MemberStatus.LEFT and left.incarnation == dead_incarnation
    step_until(router, t, lambda: all(status(n, "n3") is MemberStatus.LEFT for n in nodes[:3]))
    assert first.force_leave("n3", t).status is MemberStatus.LEFT  # again: nothing to do, no error


def test_only_a_dead_member_can_be_forced_to_leave() -> None:
    router, nodes = cluster(4)
    first = nodes[0]
    with pytest.raises(MemberNotGoneError, match="it is alive") as alive:
        first.force_leave("n1", 3.0)
    assert alive.value.status == "alive" and status(first, "n1") is MemberStatus.ALIVE
    with pytest.raises(MemberNotGoneError, match="this node"):
        first.force_leave("n0", 3.0)
    with pytest.raises(UnknownMemberError):
        first.force_leave("nobody", 3.0)

    router.down.add(nodes[2].local_member.address)
    t = step_until(router, 3.05, lambda: status(first, "n2") is MemberStatus.SUSPECT)
    with pytest.raises(MemberNotGoneError, match="it is suspect"):
        first.force_leave("n2", t)


def test_a_member_forced_to_leave_that_comes_back_is_alive_again() -> None:
    router, nodes = cluster(4)
    first, gone = nodes[0], nodes[3]
    router.down.add(gone.local_member.address)
    t = step_until(router, 3.05, lambda: status(first, "n3") is MemberStatus.DEAD)
    first.force_leave("n3", t)
    router.down.discard(gone.local_member.address)  # it was only cut off: it hears of its leave and refutes it
    step_until(router, t, lambda: all(status(n, "n3") is MemberStatus.ALIVE for n in nodes[:3]))
    assert gone.local_member.incarnation > 0
