"""The crdt error hierarchy: one root, precise subclasses that carry the data a caller needs to react.

Each error also subclasses the matching stdlib error so generic callers (``except ValueError``) keep working.
"""

from __future__ import annotations


class CRDTError(Exception):
    """Root of every error raised by the ``crdt`` package."""


class DecodeError(CRDTError, ValueError):
    """Bytes from the outside world are malformed, oversized, too deep, or describe an invalid state."""


class InvalidOperationError(CRDTError, ValueError):
    """A mutator was called with arguments that can never be valid (e.g. incrementing by zero)."""


class TypeMismatchError(CRDTError, TypeError):
    """Two different CRDT types met (merge of unlike types, an ORMap key reused with another kind)."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class CausalGapError(CRDTError):
    """An op arrived that is not the next one from its origin where the caller demanded causal order."""

    def __init__(self, replica: str, expected: int, got: int) -> None:
        super().__init__(f"op from {replica!r}: expected counter {expected}, got {got}")
        self.replica = replica
        self.expected = expected
        self.got = got


class BufferFullError(CRDTError):
    """The causal delivery buffer holds its maximum number of waiting ops; the sender must back off or resync."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"causal delivery buffer is full ({capacity} pending ops)")
        self.capacity = capacity
