"""One node's member table, kept in step with the indexes the protocol needs (a base of `gossip.swim.Swim`).

Every change to an entry goes through `_set`, which keeps three derived views consistent with the table: the live
peers as a list (for O(1) random picks, memberlist's kRandomNodes), the gone members (dead or left, the only ones
reaping and reconnecting look at) and the probe order. Keeping them here, apart from the protocol, means no protocol
rule can forget one of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rumor.gossip.clock import Address
from rumor.gossip.errors import UnknownMemberError
from rumor.gossip.member import Member
from rumor.gossip.probe_order import ProbeOrder

__all__ = ["MemberTable"]


class MemberTable:
    """The entries (ourselves included) and their indexes; ``rng`` draws random peers and probe positions."""

    def __init__(self, local: Member, rng: random.Random) -> None:
        self.id = local.id
        self._rng = rng
        self._members: dict[str, Member] = {local.id: local}
        self._peers: list[str] = []  # non-gone members except us, for O(1) random picks
        self._peer_index: dict[str, int] = {}
        self._gone: dict[str, None] = {}  # dead or left (a dict, not a set: iteration order must be reproducible)
        self._probe_order = ProbeOrder(rng)
        self.observer: Callable[[Member | None, Member], None] | None = None
        """Called with (old, new) on every change to a member entry: for simulators and metrics, not for apps."""

    @property
    def local_member(self) -> Member:
        return self._members[self.id]

    def members(self) -> list[Member]:
        """Every known member, ourselves included, dead and left ones too until reaped."""
        return list(self._members.values())

    def alive_members(self) -> list[Member]:
        """Members that are alive or merely suspected, ourselves included."""
        return [m for m in self._members.values() if not m.status.is_gone]

    def member(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    # -- bookkeeping ---------------------------------------------------------------------------------------------

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

    def _reap(self, cutoff: float) -> None:
        """Forget the gone members whose status changed at or before ``cutoff``."""
        for member_id in [m for m in self._gone if self._members[m].status_changed_at <= cutoff]:
            del self._gone[member_id]
            del self._members[member_id]

    def _live_address(self, member_id: str) -> Address:
        member = self._members.get(member_id)
        if member is None or member.status.is_gone:
            raise UnknownMemberError(member_id)
        return member.address
