"""One node id, one live process: when a claim to an id at another address is refused.

Two processes with the same node id (a copied data directory, a duplicated ``--node-id``) would otherwise be merged
into one member whose address flips with every refutation, and everything keyed by member id above the membership
(replica ids, dots) would silently mix their histories. HashiCorp memberlist refuses such an update ("conflicting
address") unless the known entry is dead or left, and so do we; we also refuse a push-pull, joins included, from a
sender whose own id is alive elsewhere, and answer it with `gossip.messages.IdConflict` so that the newcomer learns
why instead of being half merged.

The rules, for a claim "node X is at address A with incarnation i" (an `Alive`, or a row of a push-pull table):
- X is us, at another address: refused if the claim is alive or suspect and ``i >= ours`` (an older one is stale news
  from a previous life of ours). A *dead or left* row about us at another address is not refused: refuting it is how
  a node restarted on a new address reclaims its id.
- X is known, alive or suspect, at another address, and ``i >=`` the known incarnation: refused. A dead or left entry
  may be taken over (what memberlist calls reclaiming a dead node's name), so a restart on a new address works once
  the old process has been found dead.
- The sender of a push-pull is live by definition (it is talking to us), so its own row conflicts whatever its
  incarnation.
Same id at the same address is never a conflict: that is a restart, or the member's own refutation.

Pure functions: the state machine decides, counts ``id_conflict`` and reports a `ConflictingClaim` to its driver,
which logs it (rate limited).
"""

from __future__ import annotations

from dataclasses import dataclass

from rumor.gossip.address import format_address
from rumor.gossip.clock import Address
from rumor.gossip.member import Member, MemberStatus


@dataclass(frozen=True, slots=True)
class ConflictingClaim:
    """A claim to ``node`` at ``claimant`` was refused because the id is alive at ``holder``.

    ``kind`` says where it was seen: ``"gossip"`` (an alive message or a table row), ``"push_pull"`` (we refused a
    push-pull, a join if ``join``, from the claimant), or ``"refused_us"`` (a peer at ``claimant`` refused our own
    push-pull: our id is in use at ``holder``).
    """

    node: str
    holder: Address
    claimant: Address
    kind: str
    join: bool = False

    def describe(self) -> str:
        """One line for an operator: what was refused, both addresses, and what to do."""
        holder, claimant = format_address(self.holder), format_address(self.claimant)
        fix = "two nodes share one node id: give each its own"
        if self.kind == "push_pull":
            return (f"refused {'a join' if self.join else 'a push-pull'} from {claimant}: node id {self.node} is "
                    f"already in use by {holder} ({fix})")
        if self.kind == "refused_us":
            return f"a peer refused our push-pull: our node id {self.node} is also in use by {holder} ({fix})"
        return f"node id {self.node} is alive at {holder}; ignoring a claim to it from {claimant} ({fix})"


def claim_holder(node: str, address: Address, incarnation: int, status: MemberStatus, me: Member,
                 known: Member | None) -> Address | None:
    """Where ``node`` is in use by another live process if this claim to it conflicts, else None (see the rules)."""
    if node == me.id:
        if address == me.address or status.is_gone or incarnation < me.incarnation:
            return None
        return me.address
    if known is None or known.status.is_gone or address == known.address or incarnation < known.incarnation:
        return None
    return known.address


def sender_holder(node: str, address: Address, me: Member, known: Member | None) -> Address | None:
    """Where the id of a push-pull's sender (announcing itself at ``address``) is already alive, else None."""
    if node == me.id:
        return None if address == me.address else me.address
    if known is None or known.status.is_gone or address == known.address:
        return None
    return known.address
