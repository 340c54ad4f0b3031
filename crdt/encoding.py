"""Versioned, deterministic bytes for CRDT states, contexts and ops (types found in ``crdt.registry``).

What is written is version 2 (``crdt.wire_v2``: flat columns, one msgpack value); version 1 (``crdt.wire_v1``)
is still read, so data directories and peers of the previous version keep working. The two are told apart at
byte 0: version 2 starts with ``0xc1``, a byte msgpack never uses, then its version byte and a flags byte; version
1 is a bare msgpack array.

Same state -> same bytes (anti-entropy compares digests): ``encode`` never compresses. ``encode(...,
compress=True)`` deflates a body above ``COMPRESS_ABOVE`` bytes when that saves at least an eighth (flag bit
``FLAG_ZLIB``); it is for storage and transfer, never for a digest, since another zlib may deflate differently.

Decoding treats its input as hostile: size limits on the input and on what it inflates to, depth limits, every
field and invariant checked while the state is built (each dot covered by the context, counters positive,
per-type entry shapes), and canonical form demanded: the structure's orders and ranges as it goes, the msgpack
layer by packing the decoded tree once more and comparing bytes. Only ``DecodeError`` escapes.
"""

from __future__ import annotations

import zlib
from typing import Any

from rumor.crdt import wire_v1, wire_v2
from rumor.crdt.causal_context import CausalContext
from rumor.crdt.causal_delivery import Op
from rumor.crdt.dot_kernel import DotKernel
from rumor.crdt.errors import DecodeError
from rumor.crdt.wire_values import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, pack, unpack

VERSION = 2
MAGIC = 0xC1
FLAG_ZLIB = 1
COMPRESS_ABOVE = 4096
#: zlib level: 1 deflates a 1.4 MB map body in ~15 ms to about a third; higher levels cost 3-5x for a few percent
ZLIB_LEVEL = 1
_PLAIN = bytes((MAGIC, VERSION, 0))
_DEFLATED = bytes((MAGIC, VERSION, FLAG_ZLIB))
#: the version the encoders write: VERSION, or 1 while a cluster is being upgraded from a release that reads only
#: version 1 (`set_write_version`); decoding always reads both
_write_version = VERSION


def set_write_version(version: int) -> None:
    """Which version ``encode``, ``encode_context`` and ``encode_op`` write, for the whole process: 2 (the default)
    or 1, the previous release's format, for a rolling upgrade (each node first runs this release writing version 1,
    so the nodes not yet upgraded read what it sends; then each restarts writing version 2). Version 1 cannot hold
    op-keyed counter increments (``crdt.counter_ops``): a caller writing it must not make them."""
    global _write_version
    if version not in (1, VERSION):
        raise ValueError(f"a CRDT encoding version this release writes: 1 or {VERSION}, not {version!r}")
    _write_version = version


def write_version() -> int:
    return _write_version


def _frame(body: list[Any], compress: bool) -> bytes:
    data = _PLAIN + pack(body)
    return compressed(data) if compress else data


def compressed(data: bytes) -> bytes:
    """``data`` (a plain version-2 encoding) deflated if it is over ``COMPRESS_ABOVE`` bytes and that saves an eighth;
    otherwise ``data`` itself. For storage and transfer: a digest is always taken of the plain bytes."""
    if len(data) <= COMPRESS_ABOVE or data[:3] != _PLAIN:
        return data
    deflated = zlib.compress(memoryview(data)[3:], ZLIB_LEVEL)
    return _DEFLATED + deflated if len(deflated) <= len(data) - len(data) // 8 else data


def _inflate(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise DecodeError(f"corrupt compressed body: {exc}") from exc
    if len(raw) > max_bytes or inflater.unconsumed_tail:
        raise DecodeError(f"compressed body inflates past the {max_bytes}-byte limit")
    if not inflater.eof or inflater.unused_data:
        raise DecodeError("compressed body is truncated or followed by stray bytes")
    return raw


def _open(data: bytes, max_bytes: int) -> Any | None:
    """The decoded version-2 body of ``data``, checked canonical at the msgpack layer; None for version 1."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError(f"input of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    if data[:1] != _PLAIN[:1]:
        return None
    if len(data) < 3 or data[1] != VERSION or data[2] not in (0, FLAG_ZLIB):
        raise DecodeError("unknown rumor CRDT encoding version or flags")
    raw = _inflate(data[3:], max_bytes) if data[2] == FLAG_ZLIB else data[3:]
    body = unpack(raw, max_bytes)
    if pack(body) != raw:
        raise DecodeError("non-canonical encoding (non-minimal msgpack, duplicated map keys or float32)")
    return body


def encode(state: DotKernel[Any], *, compress: bool = False) -> bytes:
    """Deterministic bytes for ``state`` (a registered CRDT type); ``compress`` may deflate a big one."""
    if _write_version == 1:
        return wire_v1.encode(state)
    return _frame(wire_v2.state_body(state), compress)


def _v2_raw(data: bytes) -> bytes | None:
    """The msgpack body of a version-2 frame (inflated if deflated), unchecked; None for any other bytes."""
    if len(data) < 3 or data[0] != MAGIC or data[1] != VERSION or data[2] not in (0, FLAG_ZLIB):
        return None
    return _inflate(data[3:], DEFAULT_MAX_BYTES) if data[2] == FLAG_ZLIB else data[3:]


def as_written(data: bytes) -> bytes | None:
    """``data`` (an ``encode`` output, possibly deflated by ``compressed``) as the plain bytes ``encode`` would write
    for its state now, found without building the state; None when only a decode and a new encode can tell (version-1
    bytes, or while writing version 1). For bytes this process stored itself: they are not checked again."""
    raw = _v2_raw(data) if _write_version == VERSION else None
    if raw is None:
        return None
    return data if data[2] == 0 else _PLAIN + raw


def holds_entries(data: bytes) -> bool | None:
    """Whether the state in ``data`` (version 2, possibly deflated) has any entry, i.e. is not ``is_empty()``, read
    from its layout without building the state; None for bytes that do not say so without a decode."""
    raw = _v2_raw(data)
    if raw is None:
        return None
    body = unpack(raw, DEFAULT_MAX_BYTES)
    if type(body) is not list or len(body) < 8 or type(body[4]) is not list:
        return None
    return bool(body[4])  # the dot groups: one per replica with entries


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Rebuild a state from ``encode`` output (either version); raises only ``DecodeError`` on bad input."""
    body = _open(data, max_bytes)
    if body is None:
        return wire_v1.decode(data, max_bytes=max_bytes, max_depth=max_depth)
    return wire_v2.state_from_body(body, max_depth)


def encode_context(ctx: CausalContext) -> bytes:
    if _write_version == 1:
        return wire_v1.encode_context(ctx)
    return _frame(wire_v2.context_body(ctx), False)


def encode_state_context(state: DotKernel[Any]) -> bytes:
    """``encode_context(state.context())`` without copying the context first (a read renders it on every write)."""
    return encode_context(state._ctx)


def decode_context(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> CausalContext:
    body = _open(data, max_bytes)
    if body is None:
        return wire_v1.decode_context(data, max_bytes=max_bytes)
    return wire_v2.context_from_body(body)


def encode_op(op: Op) -> bytes:
    if _write_version == 1:
        return wire_v1.encode_op(op)
    return _frame(wire_v2.op_body(op), False)


def decode_op(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Op:
    body = _open(data, max_bytes)
    if body is None:
        return wire_v1.decode_op(data, max_bytes=max_bytes, max_depth=max_depth)
    return wire_v2.op_from_body(body, max_depth)


__all__ = ["COMPRESS_ABOVE", "FLAG_ZLIB", "VERSION", "compressed", "decode", "decode_context", "decode_op", "encode",
           "encode_context", "encode_op", "encode_state_context"]
