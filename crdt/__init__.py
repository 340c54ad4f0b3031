"""Pure CRDT algebra for rumor: causal building blocks, delta-state types, op-based delivery, encoding.

No I/O, no clock, no randomness: callers pass replica ids, physical time and contexts in.
"""

from crdt.causal_context import CausalContext
from crdt.dot import Dot
from crdt.dot_kernel import DotKernel
from crdt.errors import (
    BufferFullError,
    CausalGapError,
    CRDTError,
    DecodeError,
    InvalidOperationError,
    TypeMismatchError,
)
from crdt.gcounter import GCounter
from crdt.hlc import HLCTimestamp, HybridLogicalClock
from crdt.lww_register import LWWRegister
from crdt.mv_register import MVRegister
from crdt.orset import ORSet
from crdt.plain_value import order_key
from crdt.pncounter import PNCounter
from crdt.protocol import CRDT
from crdt.version_vector import Ordering, VersionVector

__all__ = [
    "CRDT",
    "BufferFullError",
    "CRDTError",
    "CausalContext",
    "CausalGapError",
    "DecodeError",
    "Dot",
    "DotKernel",
    "GCounter",
    "HLCTimestamp",
    "HybridLogicalClock",
    "InvalidOperationError",
    "LWWRegister",
    "MVRegister",
    "ORSet",
    "Ordering",
    "PNCounter",
    "TypeMismatchError",
    "VersionVector",
    "order_key",
]
