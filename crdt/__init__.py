"""Pure CRDT algebra for rumor: causal building blocks, delta-state types, op-based delivery, encoding.

No I/O, no clock, no randomness: callers pass replica ids, physical time and contexts in.
"""

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.causal_delivery import CausalDelivery, Op, OpEmitter
from rumor.crdt.dot import Dot
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.encoding import (
    decode,
    decode_context,
    decode_op,
    encode,
    encode_context,
    encode_op,
    encode_state_context,
)
from rumor.crdt.errors import (
    BufferFullError,
    CausalGapError,
    CRDTError,
    DecodeError,
    InvalidOperationError,
    TypeMismatchError,
)
from rumor.crdt.gcounter import GCounter
from rumor.crdt.hlc import HLCTimestamp, HybridLogicalClock
from rumor.crdt.lww_map import LWWMap
from rumor.crdt.lww_register import LWWRegister
from rumor.crdt.mv_register import MVRegister
from rumor.crdt.ormap import ORMap
from rumor.crdt.orset import ORSet
from rumor.crdt.plain_value import order_key
from rumor.crdt.pncounter import PNCounter
from rumor.crdt.protocol import CRDT
from rumor.crdt.registry import TYPES, register_type
from rumor.crdt.version_vector import Ordering, VersionVector

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
