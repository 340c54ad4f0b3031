"""Convergence reports: does this node hold the same data as every other member, right now, and if not, how far off?

**How a report is made.** One round, run at most every ``min_interval_s`` (concurrent callers share it):

1. Our own state *before*: stale digests rehashed (bounded, as a session's OPEN does), then our Merkle root, the
   tree's range hashes and how many digests are still stale.
2. A PROBE (`server.replication.probe`) to every live peer whose metadata says it answers one, all at once, each
   bounded by ``probe_timeout_s``. Each answer carries the peer's root, range hashes, stale digests, backlog and lag.
3. Our own state *after*, the same way.

**Why "converged" is never said early.** The verdict is ``converged`` only if every member that has not left is
alive and answered, no side reported a stale digest, our root was the same before and after the round, and every
answer's root equals it. Then:

- A digest is updated on every change of its key (`ReplicaCore` marks it on every local write and every merge);
  with no stale digest a root is the hash of the node's whole keyspace as it was when the root was read.
- CRDT states only grow (each change is a join that adds something), so a keyspace never returns to an earlier
  state: our root equal before and after means our keyspace did not change during the round.
- So every peer's keyspace, at the moment it answered, equalled ours at that same moment: all the data was equal,
  not merely similar, up to a 2**-128 hash accident.
- Deltas in flight or queued change nothing here: a delta is part of its sender's state, and a receiver whose root
  equals the sender's already holds it. The backlog is reported for operators, it is not needed for the verdict.
  Writes accepted after the round are, of course, not in it: a report is a snapshot, stamped with its time.

A member that is suspect, dead, unreachable or too old to answer a PROBE makes the verdict ``unknown`` (never
``converged``), or ``diverged`` when its last answer's root differs from ours now. ``diverged`` means a root that
differs (from an answer now, or the last answer of a peer that cannot be asked); ``alone`` means no other member.

**Replication lag** (``lag_s`` per peer) is the age of the oldest delta group that peer made which this node does not
hold yet, measured on the peer's own clock when it answered (0 when we hold all of them, null without an answer).
It counts writes made on that peer; writes younger than one push interval are not yet in a group.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rumor.gossip.address import format_address
from rumor.gossip.errors import GossipError
from rumor.gossip.member import Member, MemberStatus
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.member_meta import reads_probe
from rumor.server.replication.probe import ProbeAnswer, differing_ranges, parse_probed, probe_message

if TYPE_CHECKING:
    from rumor.server.replication.runtime import GossipReplication

VERDICTS = ("converged", "diverged", "unknown", "alone")
DEFAULT_MIN_INTERVAL_S = 0.2
DEFAULT_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class OwnState:
    root: bytes
    ranges: bytes
    dirty: int


@dataclass(slots=True)
class PeerView:
    """One peer's row of a report (see `to_json` for what each field means to an operator)."""

    id: str
    status: str
    incarnation: int
    gossip_address: str
    answer: ProbeAnswer | None = None
    answered_s_ago: float | None = None  # of `answer`: 0-ish when it came in this round
    fresh: bool = False  # `answer` came in this round
    root_match: bool | None = None
    differing_ranges: int | None = None
    last_exchange_s_ago: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        answer = self.answer if self.fresh else None
        return {
            "id": self.id, "status": self.status, "incarnation": self.incarnation,
            "gossip_address": self.gossip_address, "answered": self.fresh,
            "root_match": self.root_match, "differing_ranges": self.differing_ranges,
            "last_exchange_s_ago": _round(self.last_exchange_s_ago),
            "last_answer_s_ago": _round(self.answered_s_ago),
            "keys": None if answer is None else answer.keys,
            "dirty_keys": None if answer is None else answer.dirty,
            "backlog_groups": None if answer is None else answer.backlog_groups,
            "backlog_bytes": None if answer is None else answer.backlog_bytes,
            "lag_s": None if answer is None else _round(answer.oldest_unheld_age_s or 0.0),
            "note": self.note,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def judge(before: OwnState, after: OwnState, peers: list[PeerView]) -> tuple[str, str]:
    """(verdict, one-line summary) from one round; see the module docstring for why this cannot say converged early."""
    if not peers:
        return "alone", "no other members: nothing to converge with"
    differing = [p for p in peers if p.root_match is False]
    if differing:
        ranges = [p.differing_ranges for p in differing]
        counted = sum(r for r in ranges if r is not None)
        exchanges = [p.last_exchange_s_ago for p in differing if p.last_exchange_s_ago is not None]
        last = f"last exchange {min(exchanges):.1f} s ago" if exchanges else "no exchange yet"
        what = (f"{counted} key ranges differ" if counted != 1 else "1 key range differs") if counted \
            else "data differs"
        plural = "s" if len(differing) != 1 else ""
        return "diverged", f"{what} with {len(differing)} peer{plural} ({', '.join(p.id for p in differing)}), {last}"
    silent = [p for p in peers if not p.fresh]
    if silent:
        named = ", ".join(f"{p.id} ({p.note})" for p in silent)
        return "unknown", f"cannot confirm: no answer from {named}"
    if before.root != after.root or before.dirty or after.dirty:
        return "unknown", "this node's data changed during the check: ask again"
    stale = [p.id for p in peers if p.answer is not None and not p.answer.settled]
    if stale:
        return "unknown", f"digests still being rehashed on {', '.join(stale)}: ask again"
    keys = peers[0].answer.keys if peers[0].answer is not None else 0
    return "converged", f"converged: {len(peers) + 1} nodes hold the same {keys} keys"


class ConvergenceMonitor:
    """Makes convergence reports for one node's `GossipReplication` (`report`); rounds are shared and rate-bounded."""

    def __init__(self, replication: GossipReplication, *, min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
                 probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> None:
        self.replication = replication
        self.min_interval_s = min_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._last_answers: dict[str, tuple[float, ProbeAnswer]] = {}
        self._report: dict[str, Any] | None = None
        self._report_at = float("-inf")
        self._round: asyncio.Task[dict[str, Any]] | None = None

    async def report(self) -> dict[str, Any]:
        """The latest report, made now unless one finished less than ``min_interval_s`` ago."""
        now = self.replication.clock.now()
        if self._report is not None and now - self._report_at < self.min_interval_s:
            return self._report
        if self._round is None or self._round.done():
            self._round = self.replication.spawn(self._make_report(), "convergence")
        # shielded: a caller that goes away does not cancel the round others wait for
        return await asyncio.shield(self._round)

    async def _own(self) -> OwnState:
        """This node's root, range hashes and dirty count, once its dirty digests are rehashed (in slices with the
        loop free between them: a write load leaves thousands, and rehashing them at once held the loop 130-360 ms)."""
        core = self.replication.core
        assert core is not None
        await self.replication.flush_digests()
        return OwnState(core.digests.tree.root(), core.range_hashes(), core.digests.dirty)

    async def _make_report(self) -> dict[str, Any]:
        replication, core, memberlist = self.replication, self.replication.core, self.replication.memberlist
        if core is None or memberlist is None:
            return {"node": None, "verdict": "unknown", "summary": "replication is not running", "peers": []}
        members = [m for m in memberlist.members() if m.id != core.node_id and m.status is not MemberStatus.LEFT]
        before = await self._own()
        answers = await asyncio.gather(*(self._probe(m) for m in members))
        after = await self._own()
        now = replication.clock.now()
        peers = [self._view(member, answer, after, now) for member, answer in zip(members, answers, strict=True)]
        verdict, summary = judge(before, after, peers)
        report = {
            "node": core.node_id, "verdict": verdict, "summary": summary,
            "keys": len(core.digests.tree), "root": after.root.hex(), "dirty_keys": after.dirty,
            "backlog_groups": core.disseminator.queued(), "backlog_bytes": core.disseminator.backlog_bytes,
            "peers": [p.to_json() for p in sorted(peers, key=lambda p: p.id)],
        }
        self._report, self._report_at = report, replication.clock.now()
        return report

    async def _probe(self, member: Member) -> ProbeAnswer | str:
        """The member's answer, or why there is none."""
        if member.status is not MemberStatus.ALIVE:
            return member.status.name.lower()
        if not reads_probe(member.meta):
            return "older version: cannot be asked"
        core, memberlist = self.replication.core, self.replication.memberlist
        assert core is not None and memberlist is not None
        epochs = [epoch for node, epoch in core.coverage.origins() if node == member.id]
        epoch = max(epochs, default=0)
        held = core.coverage.vector().get((member.id, epoch), 0)
        try:
            reply = await memberlist.request(member.id, probe_message(epoch, held), self.probe_timeout_s)
        except (GossipError, OSError, TimeoutError) as exc:
            return f"unreachable: {type(exc).__name__}"
        try:
            answer = parse_probed(reply)
        except ReplicationProtocolError as exc:
            core.stats.rejected[f"probe_answer_{exc.reason}"] = core.stats.rejected.get(
                f"probe_answer_{exc.reason}", 0) + 1
            return "answered with a malformed PROBED"
        self._last_answers[member.id] = (self.replication.clock.now(), answer)
        return answer

    def _view(self, member: Member, answer: ProbeAnswer | str, ours: OwnState, now: float) -> PeerView:
        core = self.replication.core
        assert core is not None
        view = PeerView(member.id, member.status.name.lower(), member.incarnation, format_address(member.address))
        exchanged = core.last_exchange.get(member.id)
        view.last_exchange_s_ago = None if exchanged is None else max(0.0, now - exchanged)
        if isinstance(answer, str):
            view.note = answer
        else:
            view.fresh = True
        last = self._last_answers.get(member.id)
        if last is not None:  # this round's answer, or the last one this member gave (it cannot be asked now)
            at, known = last
            view.answer, view.answered_s_ago = known, max(0.0, now - at)
            view.root_match = known.root == ours.root
            view.differing_ranges = differing_ranges(ours.ranges, known.ranges)
        return view


__all__ = ["VERDICTS", "ConvergenceMonitor", "OwnState", "PeerView", "judge"]
