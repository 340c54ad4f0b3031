"""What one node knows about another: identity, address, incarnation and liveness verdict.

`Member` is an immutable snapshot; the state machine replaces it on every change, so a snapshot handed to a
delegate or a caller can never change under their feet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from rumor.gossip.clock import Address


class MemberStatus(IntEnum):
    """Liveness verdict. Values are on the wire (push-pull tables): append only."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def is_gone(self) -> bool:
        """Dead or left: not probed, not a gossip target, not counted in N."""
        return self in (MemberStatus.DEAD, MemberStatus.LEFT)


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    address: Address
    incarnation: int
    status: MemberStatus
    meta: bytes = b""
    status_changed_at: float = 0.0

    @property
    def is_alive(self) -> bool:
        """Alive or merely suspected: still a member as far as the application is concerned."""
        return not self.status.is_gone
