"""Wire format of anti-entropy messages, and strict decoding of what a peer sent.

Every byte of the repair budget is spent here: hash groups, leaf entries and deferrals are packed as fixed-width
records inside one msgpack ``bin`` per level or leaf instead of one msgpack object per node, which is what keeps
locating 100 differences at ~7 KB. Composing a message within its size bounds is `composer.Composer`.

A message is one type byte (`AntiEntropyMessageType`) plus a msgpack map with sorted keys. EXCHANGE fields (all
optional):

====  =================================  ===========================================================
key   value                              meaning
====  =================================  ===========================================================
s     int                                slice offset for this session (requests only)
n     int                                the responder's key count (first reply only)
g     [[level, bin]]                     records ``id | fanout x width`` hash slices of id's children
sk    [[level, bin]]                     records ``id | sketch_size x width``: a `sketch_of` id's children
e     bin                                records ``leaf | head | n x entry``: head = form (2 bits) | n (6 bits, 63 =
                                         n in 2 more bytes); entry = entry tag (3), or ``fingerprint (3) | digest
                                         slice``, or that and ``size (2)`` (`LISTING_TAGS` ...)
d     [[level, bin]]                     records ``id``: nodes known to differ, for the receiver to expand
w     bin                                records ``leaf | fingerprint or entry tag``: send me these keys' states
k     [[key, state, flag]]               states; flag = push your merged state back if it differs
c     [[key, flag, chunk]]               a chunk of a state too big for one message
m     [[key, transfer, index, flag]]     more chunks are available from index: ask for them
cw    [[key, transfer, index, flag]]     send me the chunks of transfer from index
x     [transfer]                         that transfer's state changed: abandon it
ft    int                                features the sender reads in a reply (requests only; `FEATURE_CONTEXTS`)
cx    [[key, context, answer]]           context rows: the sender's opaque context of a big key instead of its
                                         state; answer = this row answers the peer's own (see below)
====  =================================  ===========================================================

``ft`` and ``cx`` were appended after the others, and neither changes what the others mean. A peer that predates
them refuses any message holding them (it takes unknown fields as malformed), so they go only to a peer the
application knows reads them (``peer_reads_contexts`` of `session.AntiEntropySession`, learnt outside this protocol:
no message here has room an older peer would ignore), and a responder sends ``cx`` only in reply to a request whose
``ft`` says it reads them. A context is opaque bytes here: the application makes and reads it.

HELLO is a map of the initiator's tree shape and root (``D`` depth, ``f`` fanout, ``n`` key count, ``r`` root, ``s``
slice offset, ``v`` `PROTOCOL_VERSION`, ``w`` slice width); IN_SYNC an empty map; ERROR ``{"reason": str}``.
BULK and BULK_STATES (appended later, for a node far behind its peer) are `bulk`'s: a peer that predates them
answers ERROR, so they too go only to a peer the application knows reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import msgpack

from rumor.gossip.anti_entropy.chunking import MAX_COUNT, TRANSFER_ID_BYTES, Chunk, ChunkError
from rumor.gossip.anti_entropy.merkle import DIGEST_BYTES, KEY_HASH_BYTES, MerkleTree, sketch_size
from rumor.gossip.errors import GossipError
from rumor.gossip.msgpack_wire import UNPACK_ERRORS, unpack_error_reason

PROTOCOL_VERSION = 2
"""Sent in HELLO; peers of another version refuse the session (``shape_mismatch``)."""


class AntiEntropyMessageType(IntEnum):
    """First byte of every anti-entropy message. Append-only: the decoder accepts exactly these values."""

    HELLO = 0x41
    IN_SYNC = 0x42
    EXCHANGE = 0x43
    ERROR = 0x44
    BULK = 0x45
    """A request for every state in a range of leaves (`bulk`): only to a peer known to read it."""
    BULK_STATES = 0x46
    """The answer to BULK: states in leaf order and where to go on."""


_MESSAGE_TYPES = {int(kind): kind for kind in AntiEntropyMessageType}

SIZE_HINT_BYTES = 2
"""Width of the encoded-state size hint in leaf listings (sizes saturate at 65535)."""

LISTING_TAGS, LISTING_FINGERPRINTS, LISTING_SIZES = 0, 1, 2
"""Forms of a leaf listing's entries: `entry_tag`; key fingerprint + digest slice; the same + size hint."""

SHORT_COUNT = 0x3F
"""Leaf listing head: form in the top two bits, then the entry count, or this value and the count in two bytes."""

_FIELDS = frozenset({"s", "n", "g", "sk", "e", "d", "w", "k", "c", "m", "cw", "x", "ft", "cx"})

FEATURE_CONTEXTS = 1
"""``ft`` bit: the requester reads context rows (``cx``) in the reply, and answers them."""
MAX_FEATURES = 1 << 16
"""``ft`` is below this; bits a peer does not know are ignored (later features append bits)."""
MAX_CONTEXT_KEY_BYTES = 4096
"""Longest key a context row may name: a big state's key, and far below a message (senders fall back to the state
for longer keys, so this refuses only garbage)."""
MAX_CONTEXT_BYTES = 16 * 1024
"""Largest context a row may carry. A context is a few counters per replica plus a gap cloud; one this big no
longer saves much next to the state, and senders send the state instead."""


class AntiEntropyProtocolError(GossipError, ValueError):
    """A message broke the protocol (undecodable, wrong shape, out of range); ``reason`` is a short stable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def size_hint(size: int) -> int:
    """A state size as sent in leaf listings: exact below 64 KiB, saturated above (0 means unknown)."""
    return min(size, (1 << (8 * SIZE_HINT_BYTES)) - 1)


def entry_width(width: int, form: int) -> int:
    """Bytes per entry of a leaf listing in ``form`` (see `LISTING_TAGS`)."""
    if form == LISTING_TAGS:
        return KEY_HASH_BYTES
    return KEY_HASH_BYTES + width + (SIZE_HINT_BYTES if form == LISTING_SIZES else 0)


def listing_head(count: int, form: int) -> bytes:
    """The header of a leaf listing: one byte (form and count) for the usual few entries."""
    if count < SHORT_COUNT:
        return bytes([form << 6 | count])
    return bytes([form << 6 | SHORT_COUNT]) + count.to_bytes(2, "big")


def id_width(tree: MerkleTree) -> int:
    """Bytes per node id on the wire: enough for the largest leaf index."""
    return max(1, ((tree.leaf_count - 1).bit_length() + 7) // 8)


def encode_message(kind: AntiEntropyMessageType, body: dict[str, object]) -> bytes:
    """Type byte + msgpack map in sorted key order (deterministic bytes for equal content)."""
    return bytes([kind]) + msgpack.packb({k: body[k] for k in sorted(body)}, use_bin_type=True)


def decode_message(data: bytes, max_message_bytes: int) -> tuple[AntiEntropyMessageType, object]:
    """Split type byte and body; anything undecodable, oversized or of an unknown type raises
    `AntiEntropyProtocolError`."""
    if len(data) > max_message_bytes:
        raise AntiEntropyProtocolError("oversized", f"{len(data)} > {max_message_bytes}")
    kind = _MESSAGE_TYPES.get(data[0]) if data else None
    if kind is None:
        raise AntiEntropyProtocolError("unknown_type", data[:1].hex() or "empty")
    try:
        body = msgpack.unpackb(data[1:], raw=False, use_list=True)
    except UNPACK_ERRORS as exc:
        raise AntiEntropyProtocolError("undecodable", unpack_error_reason(exc)) from exc
    return kind, body


def _fail(detail: str) -> AntiEntropyProtocolError:
    return AntiEntropyProtocolError("malformed_exchange", detail)


def _rows(body: dict[str, object], name: str, arity: int) -> list[list[object]]:
    rows = body.get(name, [])
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == arity for r in rows):
        raise _fail(f"{name} must be a list of {arity}-element arrays")
    return rows


def _int(value: object, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value < high:
        raise _fail(f"{what} {value!r} not in [{low}, {high})")
    return value


def _bin(value: object, what: str, record: int = 1, exact: int | None = None, most: int | None = None) -> bytes:
    if not isinstance(value, bytes) or len(value) % record or (exact is not None and len(value) != exact) or (
            most is not None and len(value) > most):
        raise _fail(f"{what} has a bad length or type")
    return value


def _flag(value: object) -> bool:
    if type(value) is not bool:
        raise _fail("flag must be a boolean")
    return value


class Hello(NamedTuple):
    """A validated HELLO: the initiator's tree shape, key count and root, its slice offset and wire version."""

    depth: int
    fanout: int
    key_count: int
    root: bytes
    salt: int
    version: int
    width: int

    def body(self) -> dict[str, object]:
        return {"D": self.depth, "f": self.fanout, "n": self.key_count, "r": self.root, "s": self.salt,
                "v": self.version, "w": self.width}

    @classmethod
    def parse(cls, body: object) -> Hello:
        if not isinstance(body, dict) or set(body) != set(_HELLO_FIELDS):
            raise AntiEntropyProtocolError("malformed_hello", "wrong fields")
        for name, typ in _HELLO_FIELDS.items():
            if type(body[name]) is not typ:
                raise AntiEntropyProtocolError("malformed_hello", f"{name} must be {typ.__name__}")
        hello = cls(*(body[name] for name in _HELLO_FIELDS))
        if len(hello.root) != DIGEST_BYTES or not 0 <= hello.salt <= DIGEST_BYTES - hello.width:
            raise AntiEntropyProtocolError("malformed_hello", "bad root or slice offset")
        return hello


_HELLO_FIELDS: dict[str, type] = {"D": int, "f": int, "n": int, "r": bytes, "s": int, "v": int, "w": int}
"""HELLO's wire fields and types, in `Hello`'s field order."""


ChunkNote = tuple[bytes, bytes, int, bool]
"""``(key, transfer id, chunk index, pushback flag)``: an ``m`` or ``cw`` row."""


@dataclass(slots=True)
class Exchange:
    """A validated EXCHANGE: every id in range, every record the right width, every chunk checksummed."""

    salt: int | None = None
    count: int | None = None
    groups: list[tuple[int, int, bytes]] = field(default_factory=list)
    """``(level, parent, hash slices of its children)``"""
    sketches: list[tuple[int, int, bytes]] = field(default_factory=list)
    """``(level, parent, sketch slices of its children)``"""
    entries: list[tuple[int, bytes, int]] = field(default_factory=list)
    """``(leaf, entries, listing form)``"""
    differs: list[tuple[int, int]] = field(default_factory=list)
    """``(level, node)``"""
    wants: list[tuple[int, bytes]] = field(default_factory=list)
    """``(leaf, fingerprint or entry tag)``"""
    states: list[tuple[bytes, bytes, bool]] = field(default_factory=list)
    """``(key, state, pushback flag)``"""
    chunks: list[tuple[bytes, bool, Chunk]] = field(default_factory=list)
    """``(key, pushback flag, chunk)``"""
    more: list[ChunkNote] = field(default_factory=list)
    chunk_wants: list[ChunkNote] = field(default_factory=list)
    gone: list[bytes] = field(default_factory=list)
    """Transfer ids to abandon."""
    features: int = 0
    """What the requester reads in the reply (`FEATURE_CONTEXTS`); 0 in replies."""
    contexts: list[tuple[bytes, bytes, bool]] = field(default_factory=list)
    """``(key, opaque context, answer flag)``: empty context bytes mean "I hold nothing of it"."""

    @classmethod
    def parse(cls, body: object, tree: MerkleTree, width: int) -> Exchange:
        """Validate a decoded EXCHANGE body against our tree's shape and the session's slice width."""
        if not isinstance(body, dict) or not set(body) <= _FIELDS:
            raise _fail("body must be a map of known fields")
        fields: dict[str, object] = body
        ex = cls()
        if "s" in fields:
            ex.salt = _int(fields["s"], 0, DIGEST_BYTES - width + 1, "slice offset")
        if "n" in fields:
            ex.count = _int(fields["n"], 0, 1 << 48, "key count")
        idw = id_width(tree)
        _parse_groups(fields, "g", tree, idw, tree.fanout * width, ex.groups)
        _parse_groups(fields, "sk", tree, idw, sketch_size(tree.fanout) * width, ex.sketches)
        _parse_entries(_bin(fields.get("e", b""), "entries"), tree, idw, width, ex.entries)
        for raw_level, raw_blob in _rows(fields, "d", 2):
            level = _int(raw_level, 0, tree.depth + 1, "level")
            blob = _bin(raw_blob, "differs", idw)
            for i in range(0, len(blob), idw):
                node = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.level_size(level), "node")
                ex.differs.append((level, node))
        step = idw + KEY_HASH_BYTES
        blob = _bin(fields.get("w", b""), "fingerprints", step)
        for i in range(0, len(blob), step):
            leaf = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.leaf_count, "leaf")
            ex.wants.append((leaf, blob[i + idw : i + step]))
        for key, state, flag in _rows(fields, "k", 3):
            ex.states.append((_bin(key, "key"), _bin(state, "state"), _flag(flag)))
        for key, flag, chunk_fields in _rows(fields, "c", 3):
            try:
                chunk = Chunk.from_wire(chunk_fields)
            except ChunkError as exc:
                raise AntiEntropyProtocolError("bad_chunk", str(exc)) from exc
            ex.chunks.append((_bin(key, "key"), _flag(flag), chunk))
        ex.more = _parse_chunk_notes(fields, "m")
        ex.chunk_wants = _parse_chunk_notes(fields, "cw")
        gone = fields.get("x", [])
        if not isinstance(gone, list):
            raise _fail("x must be a list")
        ex.gone = [_bin(t, "transfer", exact=TRANSFER_ID_BYTES) for t in gone]
        if "ft" in fields:
            ex.features = _int(fields["ft"], 0, MAX_FEATURES, "features")
        ex.contexts = [(_bin(key, "key", most=MAX_CONTEXT_KEY_BYTES),
                        _bin(context, "context", most=MAX_CONTEXT_BYTES), _flag(answer))
                       for key, context, answer in _rows(fields, "cx", 3)]
        return ex


def _parse_groups(fields: dict[str, object], name: str, tree: MerkleTree, idw: int, values_bytes: int,
                  out: list[tuple[int, int, bytes]]) -> None:
    """Hash groups (``g``) or sketches (``sk``): ``id | values`` records, one blob per level."""
    step = idw + values_bytes
    for raw_level, raw_blob in _rows(fields, name, 2):
        level = _int(raw_level, 1, tree.depth + 1, "group level")
        blob = _bin(raw_blob, "group", step)
        for i in range(0, len(blob), step):
            parent = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.level_size(level - 1), "parent")
            out.append((level, parent, blob[i + idw : i + step]))


def _parse_entries(blob: bytes, tree: MerkleTree, idw: int, width: int, out: list[tuple[int, bytes, int]]) -> None:
    """Leaf listings: ``leaf | head | entries`` records of varying length, all in one blob."""
    i = 0
    while i < len(blob):
        if i + idw + 1 > len(blob):
            raise _fail("truncated entries header")
        leaf = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.leaf_count, "leaf")
        head, i = blob[i + idw], i + idw + 1
        n, form = head & SHORT_COUNT, head >> 6
        if form > LISTING_SIZES:
            raise _fail("unknown listing form")
        if n == SHORT_COUNT:
            if i + 2 > len(blob):
                raise _fail("truncated entries header")
            n, i = int.from_bytes(blob[i : i + 2], "big"), i + 2
        start, i = i, i + n * entry_width(width, form)
        if i > len(blob):
            raise _fail("truncated entries")
        out.append((leaf, blob[start:i], form))


def _parse_chunk_notes(fields: dict[str, object], name: str) -> list[ChunkNote]:
    return [(_bin(key, "key"), _bin(tid, "transfer", exact=TRANSFER_ID_BYTES), _int(index, 0, MAX_COUNT, "chunk index"),
             _flag(flag)) for key, tid, index, flag in _rows(fields, name, 4)]


__all__ = [
    "FEATURE_CONTEXTS",
    "LISTING_FINGERPRINTS",
    "LISTING_SIZES",
    "LISTING_TAGS",
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_KEY_BYTES",
    "MAX_FEATURES",
    "PROTOCOL_VERSION",
    "SHORT_COUNT",
    "SIZE_HINT_BYTES",
    "AntiEntropyMessageType",
    "AntiEntropyProtocolError",
    "ChunkNote",
    "Exchange",
    "Hello",
    "decode_message",
    "encode_message",
    "entry_width",
    "id_width",
    "listing_head",
    "size_hint",
]
