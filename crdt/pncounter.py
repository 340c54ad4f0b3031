"""Positive-negative counter: per replica a ``(increments, decrements)`` pair of running totals.

Same embedding as ``GCounter`` (one dot-tagged entry per replica, replaced by that replica's next delta, and
read by its latest entry only); arbitrary-precision ints throughout. Increments made with an op_id are entries
keyed by the op, counted once however many replicas apply them (``crdt.counter_ops``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rumor.crdt import counter_ops
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.gcounter import _check_amount, latest_total
from rumor.crdt.registry import register_type


@register_type
class PNCounter(DotKernel[str]):
    """Counter that goes up and down. Mutators return deltas; apply them with ``merge``."""

    __slots__ = ()

    TYPE_NAME: ClassVar[str] = "pncounter"

    def increment(self, replica: str, amount: int) -> PNCounter:
        """Add ``amount`` (negative means decrement; zero is invalid)."""
        if type(amount) is not int or not amount:
            _check_amount(amount, allow_negative=True)  # raises
        kd = self._keys.get(replica)
        p, n = (0, 0) if kd is None else kd[2] if type(kd) is tuple else latest_total(kd)
        if amount > 0:
            return self._write_delta(replica, replica, (p + amount, n), None, kd)
        return self._write_delta(replica, replica, (p, n - amount), None, kd)

    def decrement(self, replica: str, amount: int = 1) -> PNCounter:
        """Subtract ``amount`` (>= 1)."""
        _check_amount(amount, allow_negative=False)
        return self.increment(replica, -amount)

    def increment_op(self, replica: str, op_id: str, amount: int, at_ms: int) -> PNCounter:
        """Add ``amount`` once however many replicas apply op ``op_id`` (see ``crdt.counter_ops``); an empty delta
        if this state holds the op already."""
        _check_amount(amount, allow_negative=True)
        pair = (amount, 0) if amount > 0 else (0, -amount)
        return counter_ops.op_delta(self, replica, op_id, pair, at_ms)

    def fold_ops(self, replica: str, before_ms: int, keep: int, limit: int = 1000) -> PNCounter:
        """The delta folding the op contributions ``replica`` owns and that are due (``counter_ops.due_for_fold``)
        into its running totals; the value stays the same. Empty when nothing is due."""
        return counter_ops.fold(self, replica, before_ms, keep, limit, latest_total, _add_pairs)

    def value(self) -> int:
        total = 0
        for key, kd in self._keys.items():
            p, n = counter_ops.contribution(kd) if type(key) is tuple else latest_total(kd)
            total += p - n
        return total

    has_ops = counter_ops.has_ops

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[Any, Any]:
        if type(key) is tuple:
            return counter_ops.op_entry_from_wire(key, payload, _pn_pair)
        if key != replica or type(key) is not str:
            raise ValueError("a counter entry is keyed by its own replica")
        return key, _pn_pair(payload)


def _add_pairs(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (a[0] + b[0], a[1] + b[1])


def _pn_pair(payload: Any) -> tuple[int, int]:
    if (
        type(payload) is not tuple
        or len(payload) != 2
        or any(type(x) is not int or x < 0 for x in payload)
        or payload == (0, 0)
    ):
        raise ValueError("pn totals are a pair of non-negative ints, not both zero")
    return payload
