"""What replication puts on gossip's application channel: one type byte + msgpack (maps in sorted key order).

Types are append-only. Every decoder is strict (exact field sets and types) and raises only
`ReplicationProtocolError`, so a garbled or hostile payload is counted and dropped before anything is merged.

=======  ======  ==========================================================================================
type     byte    body
=======  ======  ==========================================================================================
PUSH     0x60    array of delta groups ``[origin, epoch, seq, [[key, type, delta], ...]]`` (datagram or stream)
OPEN     0x61    ``{a: anti-entropy HELLO, c: claim, r: retired, v: vector}`` (request)
OPENED   0x62    same fields, the responder's answer
STEP     0x63    raw anti-entropy message follows the type byte (request and reply)
DONE     0x64    ``{v: vector}``: the session completed; the responder may raise its vector to ``v``
REPL     0x65    ``{k: key, t: type, d: delta}``: a write asking for an acknowledgement (``w`` > 1)
ACK      0x66    ``{}``: merged (and durable on a Node) before the reply
READ     0x67    ``{k: key}``: a read asking for this replica's state (``r`` > 1)
STATE    0x68    ``{t: type or nil, s: state or nil}``
=======  ======  ==========================================================================================

A PUSH body is an array header followed by the groups' own encodings, so a forwarded group is copied as bytes,
never re-encoded. Vectors are ``[[origin, epoch, seq], ...]`` sorted; ``claim`` says whether the sender's tree was
fully up to date when it sent its vector (only then may the peer rely on it after a complete session).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from server.replication.errors import ReplicationProtocolError

OriginKey = tuple[str, int]
"""A delta-group origin: (node id, epoch). A restarted process draws a new, larger epoch."""
Vector = dict[OriginKey, int]


class Kind(IntEnum):
    PUSH = 0x60
    OPEN = 0x61
    OPENED = 0x62
    STEP = 0x63
    DONE = 0x64
    REPL = 0x65
    ACK = 0x66
    READ = 0x67
    STATE = 0x68


_KINDS = frozenset(int(k) for k in Kind)


@dataclass(frozen=True, slots=True)
class DeltaEntry:
    key: str
    type_name: str
    delta: bytes


@dataclass(frozen=True, slots=True)
class DeltaGroup:
    """A batch of keyed deltas made (joined) at one origin in one push interval; ``raw`` is its wire encoding."""

    origin: OriginKey
    seq: int
    entries: tuple[DeltaEntry, ...]
    raw: bytes

    @classmethod
    def build(cls, origin: OriginKey, seq: int, entries: list[DeltaEntry]) -> DeltaGroup:
        rows = [[e.key, e.type_name, e.delta] for e in entries]
        raw = msgpack.packb([origin[0], origin[1], seq, rows], use_bin_type=True)
        return cls(origin, seq, tuple(entries), raw)


def pack(kind: Kind, body: dict[str, Any]) -> bytes:
    return bytes([kind]) + msgpack.packb({k: body[k] for k in sorted(body)}, use_bin_type=True)


def kind_of(payload: bytes) -> Kind:
    if not payload or payload[0] not in _KINDS:
        raise ReplicationProtocolError("unknown_type", payload[:1].hex() or "empty")
    return Kind(payload[0])


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


PUSH_OVERHEAD = 1 + 5
"""Type byte plus the largest array header: a push of groups costs this plus the groups' raw bytes."""


def pack_push(groups: list[bytes]) -> bytes:
    return bytes([Kind.PUSH]) + array_header(len(groups)) + b"".join(groups)


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException, RecursionError) as exc:
        raise ReplicationProtocolError("undecodable", type(exc).__name__) from None


def body_of(payload: bytes, kind: Kind, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Decode a map message of ``kind`` whose fields must be exactly ``fields`` with the given types."""
    if kind_of(payload) is not kind:
        raise ReplicationProtocolError("unexpected_type", f"{payload[0]:#x} is not {kind.name}")
    body = _unpack(payload[1:])
    if not isinstance(body, dict) or set(body) != set(fields):
        raise ReplicationProtocolError("malformed", f"{kind.name} needs fields {sorted(fields)}")
    for name, types in fields.items():
        if type(body[name]) not in types:
            raise ReplicationProtocolError("malformed", f"{kind.name}.{name} has type {type(body[name]).__name__}")
    return body


def _group(row: object, raw: bytes) -> DeltaGroup:
    if not (isinstance(row, list) and len(row) == 4 and type(row[0]) is str and type(row[1]) is int
            and type(row[2]) is int and row[2] >= 1 and isinstance(row[3], list)):
        raise ReplicationProtocolError("malformed", "delta group")
    entries = []
    for entry in row[3]:
        if not (isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is str and type(entry[1]) is str
                and type(entry[2]) is bytes):
            raise ReplicationProtocolError("malformed", "delta entry")
        entries.append(DeltaEntry(entry[0], entry[1], entry[2]))
    return DeltaGroup((row[0], row[1]), row[2], tuple(entries), raw)


def unpack_push(payload: bytes) -> list[DeltaGroup]:
    """The groups of a PUSH, each with its exact wire bytes (sliced, not re-encoded) for forwarding."""
    if kind_of(payload) is not Kind.PUSH:
        raise ReplicationProtocolError("unexpected_type", "not a push")
    unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True, max_buffer_size=len(payload) + 16)
    unpacker.feed(payload[1:])
    groups = []
    try:
        count = unpacker.read_array_header()
        for _ in range(count):
            start = unpacker.tell()
            row = unpacker.unpack()
            groups.append(_group(row, payload[1 + start : 1 + unpacker.tell()]))
        if unpacker.tell() != len(payload) - 1:
            raise ReplicationProtocolError("malformed", "trailing bytes after the groups")
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException, RecursionError) as exc:
        if isinstance(exc, ReplicationProtocolError):
            raise
        raise ReplicationProtocolError("undecodable", type(exc).__name__) from None
    return groups


def vector_to_wire(vector: Vector) -> list[list[Any]]:
    return [[origin, epoch, seq] for (origin, epoch), seq in sorted(vector.items())]


def vector_from_wire(rows: object) -> Vector:
    if not isinstance(rows, list):
        raise ReplicationProtocolError("malformed", "vector")
    out: Vector = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and type(row[0]) is str and type(row[1]) is int
                and type(row[2]) is int and row[2] >= 0):
            raise ReplicationProtocolError("malformed", "vector entry")
        out[(row[0], row[1])] = row[2]
    return out


def origins_to_wire(origins: list[OriginKey]) -> list[list[Any]]:
    return [[o, e] for o, e in sorted(origins)]


def origins_from_wire(rows: object) -> list[OriginKey]:
    if not isinstance(rows, list):
        raise ReplicationProtocolError("malformed", "origin list")
    out = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2 and type(row[0]) is str and type(row[1]) is int):
            raise ReplicationProtocolError("malformed", "origin")
        out.append((row[0], row[1]))
    return out


def split_state_blob(blob: bytes) -> tuple[str, bytes]:
    """Anti-entropy carries ``type name \\0 encoded state`` per key; split it (strictly)."""
    cut = blob.find(b"\0", 0, 32)
    if cut <= 0:
        raise ReplicationProtocolError("malformed", "state blob without a type name")
    try:
        return blob[:cut].decode("ascii"), blob[cut + 1 :]
    except UnicodeDecodeError:
        raise ReplicationProtocolError("malformed", "type name") from None


def state_blob(type_name: str, encoded: bytes) -> bytes:
    return type_name.encode("ascii") + b"\0" + encoded


__all__ = [
    "PUSH_OVERHEAD",
    "DeltaEntry",
    "DeltaGroup",
    "Kind",
    "OriginKey",
    "Vector",
    "body_of",
    "kind_of",
    "origins_from_wire",
    "origins_to_wire",
    "pack",
    "pack_push",
    "split_state_blob",
    "state_blob",
    "unpack_push",
    "vector_from_wire",
    "vector_to_wire",
]
