"""The wire format: one message-type byte followed by a msgpack map with keys in sorted order.

Why this shape (memberlist's): the type byte lets a receiver dispatch before decoding, msgpack is compact and
schema-free so fields can be added, and sorted keys make encodings deterministic (golden vectors pin them).
`MessageType` is append-only: a value, once shipped, keeps its meaning forever. Unknown map keys are ignored
(forward compatibility); missing or mistyped ones are a `PacketDecodeError`, as is anything else malformed.

A compound packet (`COMPOUND`) carries several messages: the type byte then a msgpack array of binary parts,
each a complete single message. Compounds never nest.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar

import msgpack

from rumor.gossip.clock import Address
from rumor.gossip.errors import PacketDecodeError, PacketTooLargeError
from rumor.gossip.member import MemberStatus
from rumor.gossip.msgpack_wire import UNPACK_ERRORS, unpack_error_reason

MAX_ID_CHARS = 256
MAX_HOST_CHARS = 255
MAX_COMPOUND_PARTS = 255
_MAX_INT = 2**63 - 1


class MessageType(IntEnum):
    """Append-only: never renumber, never reuse a retired value."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    SUSPECT = 5
    ALIVE = 6
    DEAD = 7
    LEFT = 8
    PUSH_PULL = 9
    COMPOUND = 10
    USER_BROADCAST = 11
    APP_MESSAGE = 12
    APP_REQUEST = 13
    APP_RESPONSE = 14
    ID_CONFLICT = 15


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe. ``target`` guards against acking a probe meant for a previous owner of our address."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    seq: int
    target: str
    source: str


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Ask a relay to probe ``target`` for us; with ``nack`` the relay reports a failure instead of staying silent."""

    TYPE: ClassVar[MessageType] = MessageType.INDIRECT_PING
    seq: int
    target: str
    target_address: Address
    source: str
    nack: bool


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[MessageType] = MessageType.ACK
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    """A relay could not reach the target: proof that *we* can still talk to the relay (Lifeguard)."""

    TYPE: ClassVar[MessageType] = MessageType.NACK
    seq: int


@dataclass(frozen=True, slots=True)
class Suspect:
    TYPE: ClassVar[MessageType] = MessageType.SUSPECT
    node: str
    incarnation: int
    source: str


@dataclass(frozen=True, slots=True)
class Alive:
    TYPE: ClassVar[MessageType] = MessageType.ALIVE
    node: str
    incarnation: int
    address: Address
    meta: bytes


@dataclass(frozen=True, slots=True)
class Dead:
    TYPE: ClassVar[MessageType] = MessageType.DEAD
    node: str
    incarnation: int
    source: str


@dataclass(frozen=True, slots=True)
class Left:
    """A graceful departure, announced by the leaver itself: not a failure, never suspected or refuted."""

    TYPE: ClassVar[MessageType] = MessageType.LEFT
    node: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class RemoteState:
    """One row of a push-pull table (not a message by itself)."""

    node: str
    address: Address
    incarnation: int
    status: MemberStatus
    meta: bytes


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full member table plus the delegate's opaque state; used both as the stream request and its reply."""

    TYPE: ClassVar[MessageType] = MessageType.PUSH_PULL
    source: str
    join: bool
    states: tuple[RemoteState, ...]
    app_state: bytes


@dataclass(frozen=True, slots=True)
class UserBroadcast:
    """A delegate broadcast piggybacked on gossip; ``source`` is the node that put it in this packet."""

    TYPE: ClassVar[MessageType] = MessageType.USER_BROADCAST
    source: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppMessage:
    """A point-to-point application datagram (`send_to`)."""

    TYPE: ClassVar[MessageType] = MessageType.APP_MESSAGE
    source: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppRequest:
    """An application request over a stream; answered by an `AppResponse`."""

    TYPE: ClassVar[MessageType] = MessageType.APP_REQUEST
    source: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppResponse:
    """``error`` is empty on success; otherwise the handler failed and ``payload`` is empty."""

    TYPE: ClassVar[MessageType] = MessageType.APP_RESPONSE
    payload: bytes
    error: str


@dataclass(frozen=True, slots=True)
class IdConflict:
    """The answer to a push-pull whose sender's node id is alive at another address: nothing was merged.

    ``node`` is the contested id and ``address`` where it is in use (the receiver itself, or a member it knows).
    """

    TYPE: ClassVar[MessageType] = MessageType.ID_CONFLICT
    node: str
    address: Address


Message = (Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | Left | PushPull | UserBroadcast
           | AppMessage | AppRequest | AppResponse | IdConflict)
MESSAGE_CLASSES: dict[MessageType, type[Any]] = {
    cls.TYPE: cls for cls in (Ping, IndirectPing, Ack, Nack, Suspect, Alive, Dead, Left, PushPull, UserBroadcast,
                              AppMessage, AppRequest, AppResponse, IdConflict)
}

_SORTED_NAMES = {cls: sorted(f.name for f in fields(cls)) for cls in MESSAGE_CLASSES.values()}
_TYPE_BYTES = {cls: bytes((cls.TYPE,)) for cls in MESSAGE_CLASSES.values()}


# -- encoding ----------------------------------------------------------------------------------------------------

def _push_pull_map(message: PushPull) -> dict[str, Any]:
    states = [{"address": s.address, "incarnation": s.incarnation, "meta": s.meta, "node": s.node,
               "status": int(s.status)} for s in message.states]
    return {"app_state": message.app_state, "join": message.join, "source": message.source, "states": states}


def encode(message: Message) -> bytes:
    """One message: type byte + msgpack map (sorted keys). Deterministic: equal messages give equal bytes."""
    cls = type(message)
    # Flat messages need no conversion: every value is a msgpack native (tuples pack as arrays).
    body = _push_pull_map(message) if isinstance(message, PushPull) else \
        {n: getattr(message, n) for n in _SORTED_NAMES[cls]}
    return _TYPE_BYTES[cls] + msgpack.packb(body, use_bin_type=True)


def compound_overhead(part_count: int) -> int:
    """Bytes a compound adds around its parts besides their own bin headers: type byte + array header."""
    return 1 + (1 if part_count < 16 else 3)


def bin_overhead(length: int) -> int:
    """msgpack bin header size for a part of ``length`` bytes."""
    return 2 if length < 256 else 3 if length < 65536 else 5


def encode_compound(parts: list[bytes]) -> bytes:
    """Wrap encoded messages into one packet; a single part is sent bare, saving the wrapper."""
    if len(parts) == 1:
        return parts[0]
    if not parts or len(parts) > MAX_COMPOUND_PARTS:
        raise ValueError(f"a compound holds 2..{MAX_COMPOUND_PARTS} parts, got {len(parts)}")
    return bytes((MessageType.COMPOUND,)) + msgpack.packb(parts, use_bin_type=True)


def compound_size(part_lengths: list[int]) -> int:
    """Exact size `encode_compound` will produce, so packets can be filled without ever overshooting."""
    if len(part_lengths) == 1:
        return part_lengths[0]
    return compound_overhead(len(part_lengths)) + sum(bin_overhead(n) + n for n in part_lengths)


def encode_within(message: Message, limit: int) -> bytes:
    """Encode and check the size: building an oversized message is a programming error, not a network one."""
    data = encode(message)
    if len(data) > limit:
        raise PacketTooLargeError(len(data), limit)
    return data


# -- decoding ----------------------------------------------------------------------------------------------------

def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except UNPACK_ERRORS as exc:
        raise PacketDecodeError("bad_msgpack", unpack_error_reason(exc)) from None


def _bad(field: str, why: str) -> PacketDecodeError:
    return PacketDecodeError("bad_field", f"{field}: {why}")


def _check_int(name: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise _bad(name, "expected a non-negative int")
    return value


def _check_str(name: str, value: Any, limit: int = MAX_ID_CHARS) -> str:
    if type(value) is not str or len(value) > limit:
        raise _bad(name, f"expected a string of at most {limit} chars")
    return value


def _check_bytes(name: str, value: Any) -> bytes:
    if type(value) is not bytes:
        raise _bad(name, "expected bytes")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise _bad(name, "expected a bool")
    return value


def _check_address(name: str, value: Any) -> Address:
    if type(value) is not list or len(value) != 2:
        raise _bad(name, "expected [host, port]")
    host = _check_str(name, value[0], MAX_HOST_CHARS)
    port = value[1]
    if type(port) is not int or not 0 <= port <= 65535:
        raise _bad(name, "port out of range")
    return (host, port)


def _check_status(name: str, value: Any) -> MemberStatus:
    if type(value) is not int or value not in MemberStatus._value2member_map_:
        raise _bad(name, "unknown member status")
    return MemberStatus(value)


def _check_states(name: str, value: Any) -> tuple[RemoteState, ...]:
    if type(value) is not list:
        raise _bad(name, "expected a list")
    return tuple(_from_map(RemoteState, item) for item in value)


_CHECKERS: dict[str, Any] = {
    "int": _check_int, "str": _check_str, "bytes": _check_bytes, "bool": _check_bool,
    "Address": _check_address, "MemberStatus": _check_status, "tuple[RemoteState, ...]": _check_states,
}


_SCHEMAS: dict[type[Any], list[tuple[str, Any]]] = {
    cls: [(f.name, _CHECKERS[str(f.type)]) for f in fields(cls)] for cls in (*MESSAGE_CLASSES.values(), RemoteState)
}


def _from_map(cls: type[Any], data: Any) -> Any:
    if type(data) is not dict:
        raise PacketDecodeError("bad_body", f"{cls.__name__}: expected a map")
    values = {}
    for name, check in _SCHEMAS[cls]:
        if name not in data:
            raise _bad(name, "missing")
        values[name] = check(name, data[name])
    return cls(**values)


def decode(data: bytes) -> Message:
    """Decode one (non-compound) message; anything malformed raises `PacketDecodeError`."""
    if not data:
        raise PacketDecodeError("empty")
    try:
        kind = MessageType(data[0])
    except ValueError:
        raise PacketDecodeError("unknown_type", str(data[0])) from None
    if kind is MessageType.COMPOUND:
        raise PacketDecodeError("nested_compound")
    return _from_map(MESSAGE_CLASSES[kind], _unpack(data[1:]))


def decode_packet(data: bytes, max_bytes: int) -> list[Message]:
    """Decode a whole datagram (single or compound). All-or-nothing: one bad part rejects the packet."""
    if len(data) > max_bytes:
        raise PacketDecodeError("oversized", f"{len(data)} > {max_bytes}")
    if not data or data[0] != MessageType.COMPOUND:
        return [decode(data)]
    parts = _unpack(data[1:])
    if type(parts) is not list or not 1 <= len(parts) <= MAX_COMPOUND_PARTS:
        raise PacketDecodeError("bad_compound", "expected a list of 1..255 parts")
    if any(type(part) is not bytes for part in parts):
        raise PacketDecodeError("bad_compound", "parts must be binary")
    return [decode(part) for part in parts]


def decode_stream(data: bytes, max_bytes: int) -> Message:
    """Decode one stream message (a request or a reply); compounds are for datagrams only."""
    if len(data) > max_bytes:
        raise PacketDecodeError("oversized", f"{len(data)} > {max_bytes}")
    return decode(data)


# -- app request replies ---------------------------------------------------------------------------------------------

def encode_app_response(payload: bytes) -> bytes:
    """The stream reply to an app request that succeeded."""
    return encode(AppResponse(payload, ""))


def encode_app_error(error: str) -> bytes:
    """The stream reply to an app request whose handler raised."""
    return encode(AppResponse(b"", error or "error"))


def decode_app_response(data: bytes, max_bytes: int) -> AppResponse:
    """Decode the reply to an app request; `PacketDecodeError` if it is not an `AppResponse`."""
    message = decode_stream(data, max_bytes)
    if not isinstance(message, AppResponse):
        raise PacketDecodeError("unexpected_stream_message", type(message).__name__)
    return message
