"""Multi-value register: ``DotFun<value>``. Concurrent writes survive side by side as siblings until a write
that observed them replaces them all (Dynamo/Riak siblings)."""

from __future__ import annotations

from typing import Any, ClassVar

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.entries import payloads
from rumor.crdt.plain_value import order_key
from rumor.crdt.registry import register_type


@register_type
class MVRegister(DotKernel[None]):
    """Register keeping every concurrent value."""

    __slots__ = ()

    TYPE_NAME: ClassVar[str] = "mvregister"

    def write(self, replica: str, value: Any, context: CausalContext | None = None) -> MVRegister:
        """Write ``value``, replacing the siblings covered by ``context`` (default: all observed)."""
        return self._write_delta(replica, None, value, context)

    def value(self) -> list[Any]:
        """Sibling values sorted by the plain-value order, equal values listed once."""
        kd = self._keys.get(None)
        if not kd:
            return []
        out: list[Any] = []
        for v in sorted(payloads(kd), key=order_key):
            if not out or order_key(out[-1]) != order_key(v):
                out.append(v)
        return out

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[None, Any]:
        if key is not None:
            raise ValueError("register entries have no key")
        return None, payload
