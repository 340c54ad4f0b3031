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
PROBE    0x69    ``{e: epoch, s: seq}``: what is your root now? (`server.replication.probe`; only to peers that read it)
PROBED   0x6a    the answer: root, range hashes, dirty digests, keys, backlog, age of the oldest group not held
=======  ======  ==========================================================================================

A PUSH body is an array header followed by the groups' own encodings, so a forwarded group is copied as bytes,
never re-encoded. Vectors are ``[[origin, epoch, seq], ...]`` sorted; ``claim`` says whether the sender's tree was
fully up to date when it sent its vector (only then may the peer rely on it after a complete session).

Each type has one builder and one strict parser here (``*_message`` / ``parse_*``); golden vectors in
``tests/vectors/replication/wire.json`` pin the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from rumor.gossip.msgpack_wire import UNPACK_ERRORS, unpack_error_reason
from rumor.server.disk_index import anti_entropy_blob as state_blob
from rumor.server.replication.errors import ReplicationProtocolError

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
    PROBE = 0x69
    PROBED = 0x6A


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
    except UNPACK_ERRORS as exc:
        raise ReplicationProtocolError("undecodable", unpack_error_reason(exc)) from None


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
    except UNPACK_ERRORS as exc:
        if isinstance(exc, ReplicationProtocolError):
            raise
        raise ReplicationProtocolError("undecodable", unpack_error_reason(exc)) from None
    return groups


# -- the map messages: one builder and one parser each ---------------------------------------------------------------

_OPEN_FIELDS: dict[str, tuple[type, ...]] = {"a": (bytes,), "c": (bool,), "r": (list,), "v": (list,)}
_DONE_FIELDS: dict[str, tuple[type, ...]] = {"v": (list,)}
_REPL_FIELDS: dict[str, tuple[type, ...]] = {"d": (bytes,), "k": (str,), "t": (str,)}
_READ_FIELDS: dict[str, tuple[type, ...]] = {"k": (str,)}
_STATE_FIELDS: dict[str, tuple[type, ...]] = {"s": (bytes, type(None)), "t": (str, type(None))}


def open_message(kind: Kind, anti_entropy: bytes, claim: bool, vector: Vector, retired: list[OriginKey]) -> bytes:
    """OPEN (``kind`` OPEN, the initiator's) or its answer (``kind`` OPENED)."""
    return pack(kind, {"a": anti_entropy, "c": claim, "r": origins_to_wire(retired), "v": vector_to_wire(vector)})


def parse_open(payload: bytes, kind: Kind) -> tuple[bytes, bool, Vector, list[OriginKey]]:
    """(anti-entropy message, claim, vector, retired origins) of an OPEN or OPENED."""
    body = body_of(payload, kind, _OPEN_FIELDS)
    return body["a"], body["c"], vector_from_wire(body["v"]), origins_from_wire(body["r"])


def step_message(anti_entropy: bytes) -> bytes:
    """The anti-entropy message follows the type byte as it is: no msgpack framing, no copy of a chunk into a map."""
    return bytes([Kind.STEP]) + anti_entropy


def parse_step(payload: bytes) -> bytes:
    if kind_of(payload) is not Kind.STEP:
        raise ReplicationProtocolError("unexpected_type", f"{payload[0]:#x} is not STEP")
    return payload[1:]


def done_message(vector: Vector) -> bytes:
    return pack(Kind.DONE, {"v": vector_to_wire(vector)})


def parse_done(payload: bytes) -> Vector:
    return vector_from_wire(body_of(payload, Kind.DONE, _DONE_FIELDS)["v"])


def repl_message(key: str, type_name: str, delta: bytes) -> bytes:
    """``delta`` is the encoded CRDT delta (or state)."""
    return pack(Kind.REPL, {"d": delta, "k": key, "t": type_name})


def parse_repl(payload: bytes) -> tuple[str, str, bytes]:
    """(key, type name, encoded delta): the delta is still to be decoded and checked against its type."""
    body = body_of(payload, Kind.REPL, _REPL_FIELDS)
    return body["k"], body["t"], body["d"]


def ack_message() -> bytes:
    return pack(Kind.ACK, {})


def is_ack(payload: bytes) -> bool:
    try:
        body_of(payload, Kind.ACK, {})
    except ReplicationProtocolError:
        return False
    return True


def read_message(key: str) -> bytes:
    return pack(Kind.READ, {"k": key})


def parse_read(payload: bytes) -> str:
    return str(body_of(payload, Kind.READ, _READ_FIELDS)["k"])


def state_message(held: tuple[str, bytes] | None) -> bytes:
    """The answer to a READ: ``(type name, encoded state)``, or None when the key was never written here."""
    type_name, state = held if held is not None else (None, None)
    return pack(Kind.STATE, {"s": state, "t": type_name})


def parse_state(payload: bytes) -> tuple[str, bytes] | None:
    """Inverse of `state_message`; a STATE with either field nil holds nothing."""
    body = body_of(payload, Kind.STATE, _STATE_FIELDS)
    if body["s"] is None or body["t"] is None:
        return None
    return body["t"], body["s"]


# -- vectors and origins ----------------------------------------------------------------------------------------------


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


__all__ = [
    "PUSH_OVERHEAD",
    "DeltaEntry",
    "DeltaGroup",
    "Kind",
    "OriginKey",
    "Vector",
    "ack_message",
    "body_of",
    "done_message",
    "is_ack",
    "kind_of",
    "open_message",
    "origins_from_wire",
    "origins_to_wire",
    "pack",
    "pack_push",
    "parse_done",
    "parse_open",
    "parse_read",
    "parse_repl",
    "parse_state",
    "parse_step",
    "read_message",
    "repl_message",
    "split_state_blob",
    "state_blob",
    "state_message",
    "step_message",
    "unpack_push",
    "vector_from_wire",
    "vector_to_wire",
]
