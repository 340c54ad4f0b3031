"""Grow-only counter, embeddable: one entry per replica holding its running total, tagged with its latest dot.

This is Riak's embedded counter: an increment's delta carries the replica's new total under a fresh dot and
covers the replica's previous dot, so the join (the shared dot-kernel join) replaces the old entry. Standalone
it behaves as the classic G-Counter (per-replica max); inside an ORMap the dots give it observed-reset
semantics (``clear``). Known reset caveat, as in Riak: an increment concurrent with a reset carries its
replica's whole running total, so that replica's pre-reset contribution survives with it.

Reads count each replica once, by its *latest* entry (highest dot). A state can briefly hold two entries of one
replica: deltas delivered out of order (its third increment before its second) each cover only the dot before
them, so the first entry survives until the second delta arrives. Every older entry is gone from the replica's own
state (its next increment replaced it, or a reset it merged removed it), so the join of everything drops it; the
latest entry alone is what the replica's contribution converges to. Summing both would read the first increment
twice in between.

An increment made with an op_id (``increment_op``) is an entry keyed by the op instead, read once however many
replicas applied it, and later folded into a running total (``crdt.counter_ops``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rumor.crdt import counter_ops
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.entries import Entries, items
from rumor.crdt.errors import InvalidOperationError
from rumor.crdt.registry import register_type


def _check_amount(amount: object, *, allow_negative: bool) -> int:
    if type(amount) is not int:
        raise InvalidOperationError(f"counter amount must be an int, got {type(amount).__name__}")
    if amount == 0 or (amount < 0 and not allow_negative):
        raise InvalidOperationError(f"invalid counter amount {amount}")
    return amount


def latest_total(kd: Entries | Mapping[tuple[str, int], Any]) -> Any:
    """The running total under a replica's highest dot (its entries all share the replica, so dots order by counter)."""
    if type(kd) is tuple:  # the usual: deltas arrived in order, one entry
        return kd[2]
    return max(items(kd))[1]


@register_type
class GCounter(DotKernel[str]):
    """Grow-only counter. ``increment`` returns a delta; apply it with ``merge``."""

    __slots__ = ()

    TYPE_NAME: ClassVar[str] = "gcounter"

    def increment(self, replica: str, amount: int = 1) -> GCounter:
        if type(amount) is not int or amount < 1:
            _check_amount(amount, allow_negative=False)  # raises
        kd = self._keys.get(replica)
        total = latest_total(kd) if kd else 0
        return self._write_delta(replica, replica, total + amount, None, kd)

    def increment_op(self, replica: str, op_id: str, amount: int, at_ms: int) -> GCounter:
        """An increment counted once however many replicas apply it (see ``crdt.counter_ops``); an empty delta if
        this state holds the op already."""
        _check_amount(amount, allow_negative=False)
        return counter_ops.op_delta(self, replica, op_id, amount, at_ms)

    def fold_ops(self, replica: str, before_ms: int, keep: int, limit: int = 1000) -> GCounter:
        """The delta folding the op contributions ``replica`` owns and that are due (``counter_ops.due_for_fold``)
        into its running total; the value stays the same. Empty when nothing is due."""
        return counter_ops.fold(self, replica, before_ms, keep, limit, latest_total, int.__add__)

    def value(self) -> int:
        total = 0
        for key, kd in self._keys.items():
            total += counter_ops.contribution(kd) if type(key) is tuple else latest_total(kd)
        return total

    has_ops = counter_ops.has_ops

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[Any, Any]:
        if type(key) is tuple:
            return counter_ops.op_entry_from_wire(key, payload, _positive)
        if key != replica or type(key) is not str:
            raise ValueError("a counter entry is keyed by its own replica")
        return key, _positive(payload)


def _positive(payload: Any) -> int:
    if type(payload) is not int or payload < 1:
        raise ValueError("grow-only totals are positive ints")
    return payload
