"""Pure CRDT algebra for rumor: causal building blocks, delta-state types, op-based delivery, encoding.

No I/O, no clock, no randomness: callers pass replica ids, physical time and contexts in.
"""

from crdt.causal_context import CausalContext
from crdt.causal_delivery import CausalDelivery, Op, OpEmitter, OpLog
from crdt.dot import Dot
from crdt.dot_kernel import DotKernel
from crdt.encoding import (
    TYPES,
    decode,
    decode_context,
    decode_op,
    encode,
    encode_context,
    encode_op,
    encode_state_context,
    register_type,
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
from crdt.lww_register import LWWRegister
from crdt.mv_register import MVRegister
from crdt.orset import ORSet
from crdt.plain_value import order_key
from crdt.pncounter import PNCounter
from crdt.protocol import CRDT
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
    "LWWRegister",
    "MVRegister",
    "ORSet",
    "Op",
    "OpEmitter",
    "OpLog",
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

try:  # LWWMap / ORMap are written by a sibling on top of the kernel; exported once present
    from crdt.lww_map import LWWMap

    register_type(LWWMap)
    __all__ += ["LWWMap"]
except ImportError:  # pragma: no cover - transitional until crdt/lww_map.py lands
    pass
try:
    from crdt.ormap import ORMap

    register_type(ORMap)
    __all__ += ["ORMap"]
except ImportError:  # pragma: no cover - transitional until crdt/ormap.py lands
    pass
