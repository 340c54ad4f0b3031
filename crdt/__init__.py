"""Pure CRDT algebra for rumor: causal building blocks, delta-state types, op-based delivery, encoding.

No I/O, no clock, no randomness: callers pass replica ids, physical time and contexts in.
"""

from crdt.causal_context import CausalContext
from crdt.causal_delivery import CausalDelivery, Op, OpEmitter
from crdt.dot import Dot
from crdt.dot_kernel import DotKernel
from crdt.encoding import (
    decode,
    decode_context,
    decode_op,
    encode,
    encode_context,
    encode_op,
    encode_state_context,
)
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
from crdt.lww_map import LWWMap
from crdt.lww_register import LWWRegister
from crdt.mv_register import MVRegister
from crdt.ormap import ORMap
from crdt.orset import ORSet
from crdt.plain_value import order_key
from crdt.pncounter import PNCounter
from crdt.protocol import CRDT
from crdt.registry import TYPES, register_type
from crdt.version_vector import Ordering, VersionVector

__all__ = [
    "CRDT",
    "TYPES",
    "BufferFullError",
    "CRDTError",
    "CausalContext",
    "CausalDelivery",
    "CausalGapError",
    "DecodeError",
    "Dot",
    "DotKernel",
    "GCounter",
    "HLCTimestamp",
    "HybridLogicalClock",
    "InvalidOperationError",
    "LWWMap",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "ORSet",
    "Op",
    "OpEmitter",
    "Ordering",
    "PNCounter",
    "TypeMismatchError",
    "VersionVector",
    "decode",
    "decode_context",
    "decode_op",
    "encode",
    "encode_context",
    "encode_op",
    "encode_state_context",
    "order_key",
    "register_type",
]
