"""A join's progress: rounds of push-pulls to every seed, backoff between rounds, and when to give up.

A round sends one push-pull to each seed. The join is done once a round reached any seed. It fails after
``join_max_attempts`` rounds; at once when every seed of a round turned us down for good (the cluster keys differ:
retrying for many seconds would only hide that); and at once when any seed answered that our node id is alive at
another address (`gossip.id_conflict`), even if another seed let us in: that seed merely did not know the holder
yet. Between rounds the join waits ``join_retry_base_s * 2**(attempts - 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rumor.gossip.address import format_address
from rumor.gossip.clock import Address
from rumor.gossip.config import Config
from rumor.gossip.errors import GossipError
from rumor.gossip.outgoing import JoinStatus
from rumor.gossip.transport import KeyMismatchError


class JoinError(GossipError, ConnectionError):
    """No seed let us in. The message says why, seed by seed, as far as the driver saw it fail (``reasons``)."""

    def __init__(self, seeds: list[Address], attempts: int, reasons: Mapping[Address, str] | None = None) -> None:
        self.seeds = seeds
        self.attempts = attempts
        self.reasons = dict(reasons or {})
        super().__init__(self._describe())

    def _describe(self) -> str:
        shown = ", ".join(format_address(s) for s in self.seeds) or "no seeds"
        why = "; ".join(self.reasons[s] for s in self.seeds if s in self.reasons)
        return f"could not join through {shown} after {self.attempts} attempt(s)" + (f": {why}" if why else "")


class NodeIdConflictError(JoinError):
    """A seed refused the join: our node id is alive at ``holder``, another address (`gossip.id_conflict`)."""

    def __init__(self, node_id: str, holder: Address, seeds: list[Address], attempts: int) -> None:
        self.node_id = node_id
        self.holder = holder
        super().__init__(seeds, attempts)

    def _describe(self) -> str:
        return (f"node id {self.node_id} is already in use by {format_address(self.holder)}; "
                "give this node another node id")


def failure_reason(address: Address, exc: BaseException) -> str:
    """How one push-pull to ``address`` failed, as a clause of a `JoinError` message."""
    where = format_address(address)
    if isinstance(exc, KeyMismatchError):
        what = {"reply": f"every reply from {where} failed to decrypt",
                "request": f"{where} could not decrypt our requests",
                "plaintext": f"{where} answers unencrypted but this node has a cluster key",
                "sealed": f"{where} answers encrypted but this node has no cluster key"}.get(exc.kind, str(exc))
        return f"{what}: check the cluster key"
    text = str(exc)
    return text if text.startswith(where) else f"{where}: {type(exc).__name__}: {text}"


@dataclass(slots=True)
class Join:
    seeds: list[Address]
    attempts: int = 0
    pending: set[int] = field(default_factory=set)  # request ids of this round's push-pulls still unanswered
    contacted: int = 0
    retry_at: float | None = None
    done: bool = False
    failed: bool = False
    refused: int = 0  # requests of this round turned down for good
    conflict: Address | None = None  # where a seed said our id is in use

    @property
    def status(self) -> JoinStatus:
        return JoinStatus(self.done, self.failed, self.contacted, self.attempts, self.conflict)

    def start_round(self, request_ids: list[int]) -> None:
        self.attempts += 1
        self.retry_at = None
        self.refused = 0
        self.pending = set(request_ids)

    def answered(self, request_id: int, now: float, config: Config, *, ok: bool, refused: bool = False,
                 conflict: Address | None = None) -> bool:
        """Record how one of this round's push-pulls ended; False if ``request_id`` is not one of them."""
        if request_id not in self.pending:
            return False
        self.pending.discard(request_id)
        self.contacted += int(ok)
        self.refused += int(refused)
        if conflict is not None:
            self.conflict = conflict
        if not self.pending:
            self._round_done(now, config)
        return True

    def _round_done(self, now: float, config: Config) -> None:
        if self.conflict is not None:
            self.failed = True
        elif self.contacted > 0:
            self.done = True
        elif self.attempts >= config.join_max_attempts or self.refused == len(self.seeds):
            self.failed = True
        else:
            self.retry_at = now + config.join_retry_base_s * 2 ** (self.attempts - 1)
