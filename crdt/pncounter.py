"""Positive-negative counter: per replica a ``(increments, decrements)`` pair of running totals.

Same embedding as ``GCounter`` (one dot-tagged entry per replica, replaced by that replica's next delta, and
read by its latest entry only); arbitrary-precision ints throughout.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
        _check_amount(amount, allow_negative=True)
        kd = self._keys.get(replica)
        p, n = (0, 0) if kd is None else kd[2] if type(kd) is tuple else latest_total(kd)
        if amount > 0:
            p += amount
        else:
            n -= amount
        return self._write_delta(replica, replica, (p, n))

    def decrement(self, replica: str, amount: int = 1) -> PNCounter:
        """Subtract ``amount`` (>= 1)."""
        _check_amount(amount, allow_negative=False)
        return self.increment(replica, -amount)

    def value(self) -> int:
        total = 0
        for kd in self._keys.values():
            p, n = latest_total(kd)
            total += p - n
        return total

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[str, Any]:
        if key != replica or type(key) is not str:
            raise ValueError("a counter entry is keyed by its own replica")
        if (
            type(payload) is not tuple
            or len(payload) != 2
            or any(type(x) is not int or x < 0 for x in payload)
            or payload == (0, 0)
        ):
            raise ValueError("pn totals are a pair of non-negative ints, not both zero")
        return key, payload
