"""Op-based use of the delta types: ops stamped with a dot and deps, and a causal delivery buffer.

At-least-once transports duplicate and reorder; ``CausalDelivery`` turns that into exactly-once, causally
ordered effects: an op is released only after every op it depends on, a dot seen before is ignored, and ops
waiting for predecessors sit in a bounded buffer. Applying a released op is ``state.merge(op.delta)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rumor.crdt.dot import Dot
from rumor.crdt.errors import BufferFullError, CausalGapError
from rumor.crdt.version_vector import VersionVector


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: the origin's ``dot`` (its op sequence number), what it had delivered, and the delta."""

    dot: Dot
    deps: VersionVector
    type_name: str
    delta: Any


class CausalDelivery:
    """Per-replica causal delivery buffer. ``delivered`` is the vector of ops applied so far."""

    __slots__ = ("_pending", "_pending_count", "delivered", "max_pending")

    def __init__(self, max_pending: int = 10_000) -> None:
        self.delivered = VersionVector()
        self.max_pending = max_pending
        self._pending: dict[str, dict[int, Op]] = {}
        self._pending_count = 0

    @property
    def pending_count(self) -> int:
        return self._pending_count

    def _ready(self, op: Op) -> bool:
        r, c = op.dot
        vv = self.delivered._v
        if vv.get(r, 0) != c - 1:
            return False
        return all(dr == r or dn <= vv.get(dr, 0) for dr, dn in op.deps._v.items())

    def receive(self, op: Op) -> list[Op]:
        """Accept ``op``; return the ops that became deliverable, in causal order (possibly none)."""
        r, c = op.dot
        if c <= self.delivered.get(r):
            return []
        waiting = self._pending.get(r)
        if waiting is not None and c in waiting:
            return []
        if not self._ready(op):
            if self._pending_count >= self.max_pending:
                raise BufferFullError(self.max_pending)
            self._pending.setdefault(r, {})[c] = op
            self._pending_count += 1
            return []
        out = [op]
        self.delivered._v[r] = c
        if self._pending:
            self._release(out)
        return out

    def _release(self, out: list[Op]) -> None:
        """Deliver waiting ops until none is ready; each origin's next op is the only candidate it has."""
        progress = True
        while progress and self._pending:
            progress = False
            for r in list(self._pending):
                waiting = self._pending[r]
                nxt = waiting.get(self.delivered.get(r) + 1)
                if nxt is not None and self._ready(nxt):
                    del waiting[nxt.dot[1]]
                    if not waiting:
                        del self._pending[r]
                    self._pending_count -= 1
                    self.delivered._v[r] = nxt.dot[1]
                    out.append(nxt)
                    progress = True

    def record_local(self, op: Op) -> None:
        """Mark an op this replica made itself as delivered (it was applied locally when made)."""
        r, c = op.dot
        expected = self.delivered.get(r) + 1
        if c != expected:
            raise CausalGapError(r, expected, c)
        self.delivered._v[r] = c


class OpEmitter:
    """Stamps a replica's deltas as ops: next sequence dot, deps = what the replica had delivered."""

    __slots__ = ("delivery", "replica")

    def __init__(self, replica: str, delivery: CausalDelivery) -> None:
        self.replica = replica
        self.delivery = delivery

    def emit(self, delta: Any) -> Op:
        """Wrap ``delta`` (already applied locally) as the replica's next op and record it as delivered."""
        vv = self.delivery.delivered
        op = Op(Dot(self.replica, vv.get(self.replica) + 1), vv.copy(), delta.TYPE_NAME, delta)
        self.delivery.record_local(op)
        return op
