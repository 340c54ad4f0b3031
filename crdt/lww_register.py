"""Last-writer-wins register on a causal core: ``DotFun<(hlc, replica, value)>`` whose value is the maximum.

A write covers the dots it observed, so a causally later write replaces earlier ones whatever the clocks say
(an hour-behind wall clock cannot lose to what it saw). Only concurrent writes remain side by side; the
largest ``(timestamp, replica)`` wins (then the dot counter, so the choice is total and deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.entries import Entries, items
from rumor.crdt.errors import InvalidOperationError
from rumor.crdt.hlc import HLCTimestamp
from rumor.crdt.registry import register_type


def lww_winner(kd: Entries | Mapping[tuple[str, int], Any]) -> tuple[HLCTimestamp, str, Any]:
    """The winning ``(timestamp, replica, value)`` among concurrent entries (non-empty)."""
    if type(kd) is tuple:  # the usual case: concurrent writes are rare
        return kd[2]  # type: ignore[no-any-return]
    best = max(items(kd), key=lambda e: (e[1][0], e[1][1], e[0][1]))
    return best[1]  # type: ignore[no-any-return]


def lww_payload_from_wire(replica: str, payload: Any) -> tuple[HLCTimestamp, str, Any]:
    """Validate a decoded ``(timestamp, replica, value)`` written by ``replica``; raise ``ValueError`` if bad."""
    if type(payload) is not tuple or len(payload) != 3 or payload[1] != replica:
        raise ValueError("LWW payload must be (timestamp, writing replica, value)")
    ts = payload[0]
    if type(ts) is not tuple or len(ts) != 2:
        raise ValueError("timestamp must be (wall_ms, logical)")
    return HLCTimestamp.checked(ts[0], ts[1]), replica, payload[2]


@register_type
class LWWRegister(DotKernel[None]):
    """Register whose concurrent writes are resolved by hybrid logical clock, then replica id."""

    __slots__ = ()

    TYPE_NAME: ClassVar[str] = "lwwregister"

    def write(
        self, replica: str, value: Any, timestamp: HLCTimestamp, context: CausalContext | None = None
    ) -> LWWRegister:
        if not isinstance(timestamp, HLCTimestamp):
            raise InvalidOperationError(f"timestamp must be an HLCTimestamp, got {type(timestamp).__name__}")
        return self._write_delta(replica, None, (timestamp, replica, value), context)

    def _winner(self) -> tuple[HLCTimestamp, str, Any] | None:
        kd = self._keys.get(None)
        return lww_winner(kd) if kd else None

    def value(self) -> Any | None:
        w = self._winner()
        return None if w is None else w[2]

    def timestamp(self) -> HLCTimestamp | None:
        w = self._winner()
        return None if w is None else w[0]

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[None, Any]:
        if key is not None:
            raise ValueError("register entries have no key")
        return None, lww_payload_from_wire(replica, payload)
