"""Map of fields to opaque plain values, each field a last-writer-wins register on the shared dot kernel.

Store shape: ``DotMap<field, DotFun<(hlc, replica, value)>>`` (the kernel's flat form: key = field). All fields
share one causal context, which is what makes the map cheaper than a dict of ``LWWRegister``: one vector for
the whole map instead of one per field, and one dot counter per replica.

Why causal and not plain timestamps: a write covers the entries of the field it observed, so a write that
causally follows another replaces it even when the writer's clock lags by an hour; timestamps only arbitrate
between writes that are truly concurrent. Those are all kept (a field may hold several entries) and the
visible value is the entry with the largest ``(hlc, replica, dot counter)``: a total order, so every replica
shows the same value whatever order the deltas arrived in. The next write that observed them collapses the
siblings into one entry.

Removes are observed-removes: a remove covers the field's entries it saw, so a concurrent write (a dot the
remove never saw) survives. There are no tombstones: a removed field leaves only its dots in the context.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NamedTuple

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.entries import count, dots
from rumor.crdt.errors import InvalidOperationError
from rumor.crdt.hlc import HLCTimestamp
from rumor.crdt.lww_register import lww_payload_from_wire, lww_winner
from rumor.crdt.registry import register_type
from rumor.crdt.version_vector import VersionVector


class FieldVersion(NamedTuple):
    """Causal metadata of one field, for inspection (what users mean by "a field's version").

    ``vector``: per replica, the highest dot among the field's surviving writes (the field's causal frontier,
    as in dotted version vectors); ``timestamp``/``replica``: the visible write; ``concurrent``: how many
    concurrent writes the field holds (1 = no conflict; more = resolved by ``(timestamp, replica)``).
    """

    vector: VersionVector
    timestamp: HLCTimestamp
    replica: str
    concurrent: int


@register_type
class LWWMap(DotKernel[str]):
    """Fields (str) -> plain values. Mutators return deltas; apply them (local or remote) with ``merge``."""

    __slots__ = ()

    TYPE_NAME: ClassVar[str] = "lwwmap"

    # -- delta mutators ---------------------------------------------------------------------------------------
    def set(
        self, replica: str, field: str, value: Any, timestamp: HLCTimestamp, context: CausalContext | None = None
    ) -> LWWMap:
        """Delta writing ``value`` to ``field``; replaces the field's writes covered by ``context``.

        ``context`` defaults to everything this state has observed (an ordinary overwrite); pass the context of
        an earlier read to replace only what that read saw (unseen concurrent writes stay as siblings).
        """
        if not isinstance(field, str):
            raise InvalidOperationError(f"LWWMap field names must be str, got {type(field).__name__}")
        if not isinstance(timestamp, HLCTimestamp):
            raise InvalidOperationError(f"timestamp must be an HLCTimestamp, got {type(timestamp).__name__}")
        return self._write_delta(replica, field, (timestamp, replica, value), context)

    def set_all(
        self, replica: str, fields: Iterable[tuple[str, Any]], timestamp: HLCTimestamp,
        context: CausalContext | None = None,
    ) -> LWWMap:
        """One delta writing every ``(field, value)`` (distinct fields) at ``timestamp``, each with its own dot:
        the join of ``set`` after ``set``, made without changing this state."""
        if not isinstance(timestamp, HLCTimestamp):
            raise InvalidOperationError(f"timestamp must be an HLCTimestamp, got {type(timestamp).__name__}")
        writes = dict(fields)
        for field in writes:
            if not isinstance(field, str):
                raise InvalidOperationError(f"LWWMap field names must be str, got {type(field).__name__}")
        return self._write_many_delta(
            replica, ((field, (timestamp, replica, value)) for field, value in writes.items()), context
        )

    def remove(self, field: str, context: CausalContext | None = None) -> LWWMap:
        """Observed-remove of ``field`` (limited to ``context`` when given); concurrent writes survive."""
        return self._remove_delta((field,), context)

    def remove_all(self, fields: Iterable[str], context: CausalContext | None = None) -> LWWMap:
        """Observed-remove of every field in ``fields`` as one delta."""
        return self._remove_delta(fields, context)

    # -- reads ------------------------------------------------------------------------------------------------
    def get(self, field: str) -> Any | None:
        """The visible value of ``field``, or None when absent."""
        kd = self._keys.get(field)
        return lww_winner(kd)[2] if kd else None

    def value(self) -> dict[str, Any]:
        """``{field: visible value}``, sorted by field."""
        keys = self._keys
        return {f: lww_winner(keys[f])[2] for f in sorted(keys)}

    def field_versions(self, field: str) -> FieldVersion | None:
        """The field's causal frontier and the timestamp of its visible write; None when absent."""
        kd = self._keys.get(field)
        if not kd:
            return None
        frontier: dict[str, int] = {}
        for r, c in dots(kd):
            if c > frontier.get(r, 0):
                frontier[r] = c
        ts, replica, _ = lww_winner(kd)
        return FieldVersion(VersionVector(frontier), ts, replica, count(kd))

    def keys(self) -> list[str]:
        """Present fields, sorted."""
        return sorted(self._keys)

    def __contains__(self, field: object) -> bool:
        return field in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[str, Any]:
        if type(key) is not str:
            raise ValueError("LWWMap fields are str")
        return key, lww_payload_from_wire(replica, payload)
