"""Wire format of anti-entropy messages: strict decoding of what a peer sent, and size-bounded composition.

Kept apart from the session logic in `anti_entropy` because every byte of the repair budget is spent here: hash
groups, leaf entries and deferrals are packed as fixed-width records inside one msgpack ``bin`` per level or leaf
instead of one msgpack object per node, which is what keeps locating 100 differences at ~7 KB.

A message is one type byte plus a msgpack map with sorted keys. EXCHANGE fields (all optional):

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
====  =================================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgpack

from gossip.chunking import CHUNK_OVERHEAD_BYTES, MAX_COUNT, TRANSFER_ID_BYTES, Chunk, ChunkError
from gossip.errors import GossipError, PacketTooLargeError
from gossip.merkle import DIGEST_BYTES, KEY_HASH_BYTES, MerkleTree, sketch_size

if TYPE_CHECKING:
    from gossip.anti_entropy_engine import AntiEntropyConfig

SIZE_HINT_BYTES = 2
"""Width of the encoded-state size hint in leaf listings (sizes saturate at 65535)."""

_KNOWN_TYPES = frozenset({0x41, 0x42, 0x43, 0x44})
_FIELDS = frozenset({"s", "n", "g", "sk", "e", "d", "w", "k", "c", "m", "cw", "x"})
LISTING_TAGS, LISTING_FINGERPRINTS, LISTING_SIZES = 0, 1, 2
"""Forms of a leaf listing's entries: `entry_tag`; key fingerprint + digest slice; the same + size hint."""
_SHORT_COUNT = 0x3F  # leaf listing header: form in the top two bits, then the count, or this and two count bytes
_LIST_OVERHEAD = 8  # field name + array header, upper bound
_ROW_OVERHEAD = 12  # row array header + int + bin header, upper bound


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
    if count < _SHORT_COUNT:
        return bytes([form << 6 | count])
    return bytes([form << 6 | _SHORT_COUNT]) + count.to_bytes(2, "big")


def id_width(tree: MerkleTree) -> int:
    """Bytes per node id on the wire: enough for the largest leaf index."""
    return max(1, ((tree.leaf_count - 1).bit_length() + 7) // 8)


def encode_message(kind: int, body: dict[str, object]) -> bytes:
    """Type byte + msgpack map in sorted key order (deterministic bytes for equal content)."""
    return bytes([kind]) + msgpack.packb({k: body[k] for k in sorted(body)}, use_bin_type=True)


def decode_message(data: bytes, max_message_bytes: int) -> tuple[int, object]:
    """Split type byte and body; anything undecodable or oversized raises `AntiEntropyProtocolError`."""
    if len(data) > max_message_bytes:
        raise AntiEntropyProtocolError("oversized", f"{len(data)} > {max_message_bytes}")
    if not data or data[0] not in _KNOWN_TYPES:
        raise AntiEntropyProtocolError("unknown_type", data[:1].hex() or "empty")
    try:
        body = msgpack.unpackb(data[1:], raw=False, use_list=True)
    except (ValueError, TypeError) as exc:  # msgpack's errors are ValueError subclasses; bad map keys TypeError
        raise AntiEntropyProtocolError("undecodable", str(exc)) from exc
    return data[0], body


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


def _bin(value: object, what: str, record: int = 1, exact: int | None = None) -> bytes:
    if not isinstance(value, bytes) or len(value) % record or (exact is not None and len(value) != exact):
        raise _fail(f"{what} has a bad length or type")
    return value


def _flag(value: object) -> bool:
    if type(value) is not bool:
        raise _fail("flag must be a boolean")
    return value


@dataclass(slots=True)
class Exchange:
    """A validated EXCHANGE: every id in range, every record the right width, every chunk checksummed."""

    salt: int | None = None
    count: int | None = None
    groups: list[tuple[int, int, bytes]] = field(default_factory=list)
    sketches: list[tuple[int, int, bytes]] = field(default_factory=list)
    entries: list[tuple[int, bytes, int]] = field(default_factory=list)
    differs: list[tuple[int, int]] = field(default_factory=list)
    wants: list[tuple[int, bytes]] = field(default_factory=list)
    states: list[tuple[bytes, bytes, bool]] = field(default_factory=list)
    chunks: list[tuple[bytes, bool, Chunk]] = field(default_factory=list)
    more: list[tuple[bytes, bytes, int, bool]] = field(default_factory=list)
    chunk_wants: list[tuple[bytes, bytes, int, bool]] = field(default_factory=list)
    gone: list[bytes] = field(default_factory=list)

    @classmethod
    def parse(cls, body: object, tree: MerkleTree, width: int) -> Exchange:
        if not isinstance(body, dict) or not set(body) <= _FIELDS:
            raise _fail("body must be a map of known fields")
        ex = cls()
        if "s" in body:
            ex.salt = _int(body["s"], 0, DIGEST_BYTES - width + 1, "slice offset")
        if "n" in body:
            ex.count = _int(body["n"], 0, 1 << 48, "key count")
        idw, fanout, depth = id_width(tree), tree.fanout, tree.depth
        for name, target, values in (("g", ex.groups, fanout), ("sk", ex.sketches, sketch_size(fanout))):
            for level, blob in _rows(body, name, 2):
                level = _int(level, 1, depth + 1, "group level")
                step = idw + values * width
                for i in range(0, len(_bin(blob, "group", step)), step):
                    parent = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.level_size(level - 1), "parent")
                    target.append((level, parent, blob[i + idw : i + step]))
        blob = _bin(body.get("e", b""), "entries")
        i = 0
        while i < len(blob):
            if i + idw + 1 > len(blob):
                raise _fail("truncated entries header")
            leaf = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.leaf_count, "leaf")
            head, i = blob[i + idw], i + idw + 1
            n, form = head & _SHORT_COUNT, head >> 6
            if form > LISTING_SIZES:
                raise _fail("unknown listing form")
            if n == _SHORT_COUNT:
                if i + 2 > len(blob):
                    raise _fail("truncated entries header")
                n, i = int.from_bytes(blob[i : i + 2], "big"), i + 2
            start, i = i, i + n * entry_width(width, form)
            if i > len(blob):
                raise _fail("truncated entries")
            ex.entries.append((leaf, blob[start:i], form))
        for level, blob in _rows(body, "d", 2):
            level = _int(level, 0, depth + 1, "level")
            for i in range(0, len(_bin(blob, "differs", idw)), idw):
                node = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.level_size(level), "node")
                ex.differs.append((level, node))
        blob, step = _bin(body.get("w", b""), "fingerprints", idw + KEY_HASH_BYTES), idw + KEY_HASH_BYTES
        for i in range(0, len(blob), step):
            leaf = _int(int.from_bytes(blob[i : i + idw], "big"), 0, tree.leaf_count, "leaf")
            ex.wants.append((leaf, blob[i + idw : i + step]))
        for key, state, flag in _rows(body, "k", 3):
            ex.states.append((_bin(key, "key"), _bin(state, "state"), _flag(flag)))
        for key, flag, fields in _rows(body, "c", 3):
            try:
                chunk = Chunk.from_wire(fields)
            except ChunkError as exc:
                raise AntiEntropyProtocolError("bad_chunk", str(exc)) from exc
            ex.chunks.append((_bin(key, "key"), _flag(flag), chunk))
        for name, target in (("m", ex.more), ("cw", ex.chunk_wants)):
            for key, tid, index, flag in _rows(body, name, 4):
                target.append((_bin(key, "key"), _bin(tid, "transfer", exact=TRANSFER_ID_BYTES),
                               _int(index, 0, MAX_COUNT, "chunk index"), _flag(flag)))
        gone = body.get("x", [])
        if not isinstance(gone, list):
            raise _fail("x must be a list")
        ex.gone = [_bin(t, "transfer", exact=TRANSFER_ID_BYTES) for t in gone]
        return ex


def reply_content_limit(max_message_bytes: int) -> int:
    """Bytes of content a reply may carry; the remaining eighth is reserved for deferral notes."""
    return max_message_bytes - max_message_bytes // 8


class Composer:
    """Builds one EXCHANGE body without ever exceeding the size limit.

    Replies: content (hashes, entries, states, chunks) may use `reply_content_limit` bytes; deferrals (the tiny
    notes a stateless responder leaves for work it could not fit) may use the rest. Requests (``salt`` given) are
    also capped in *work*: each item is charged the bytes of the deferral notes it could cost the responder, and
    hash groups the bytes of the groups they could expand into, so an answer always fits its reply without drops.
    Sizes are counted as upper bounds while adding; the encoded message is checked against the real limit at the end.
    """

    def __init__(self, tree: MerkleTree, config: AntiEntropyConfig, salt: int | None,
                 count: int | None = None) -> None:
        self._idw = id_width(tree)
        self._fanout = tree.fanout
        self._max = config.max_message_bytes
        reply_limit = reply_content_limit(self._max)
        self._deferral_budget = self._max - reply_limit - 256 if salt is not None else None
        self._expansion_budget = reply_limit - 512
        self._group_bytes = self._idw + tree.fanout * config.hash_bytes
        self._deferred_leaves: set[tuple[int, int]] = set()
        self._charged = False
        self.content_limit = self._max if salt is not None else reply_limit
        self.full = False
        """Set once some content did not fit: lazy work is then deferred without being done."""
        self.size = 16 + (10 if count is not None else 0)
        self._count = count
        self._lists: dict[str, list[object]] = {}
        self._blobs: dict[tuple[str, int | None], bytearray] = {}
        self._flat: dict[str, bytearray] = {}
        if salt is not None:
            self._scalar_salt = salt
            self.size += 4
        else:
            self._scalar_salt = None

    def _room(self, cost: int, deferral: bool) -> bool:
        if self.size + cost <= (self._max if deferral else self.content_limit):
            return True
        if not deferral:
            self.full = True
        return False

    def _work(self, deferral_cost: int, expansion_cost: int = 0) -> bool:
        """Charge a request item for what it may cost the responder; False when this request has enough work."""
        if self._deferral_budget is None:
            return True
        if self._charged and (deferral_cost > self._deferral_budget or expansion_cost > self._expansion_budget):
            self.full = True
            return False
        # The first item is always accepted, whatever its estimate: the responder defers what does not fit, and a
        # request that could never carry some item would stall the session.
        self._charged = True
        self._deferral_budget -= deferral_cost
        self._expansion_budget -= expansion_cost
        return True

    def _append_blob(self, name: str, head: int | None, record: bytes, deferral: bool = False) -> bool:
        """Add a fixed-width record to the blob ``name`` (one per ``head`` level, or one flat blob if None)."""
        blob = self._blobs.get((name, head))
        cost = len(record) + (0 if blob is not None else _ROW_OVERHEAD + _LIST_OVERHEAD)
        if not self._room(cost, deferral):
            return False
        if blob is None:
            blob = self._blobs[(name, head)] = bytearray()
            if head is None:
                self._flat[name] = blob
            else:
                self._lists.setdefault(name, []).append([head, blob])
        blob += record
        self.size += cost
        return True

    def _append_row(self, name: str, row: list[object], payload: int, deferral: bool = False) -> bool:
        cost = payload + _ROW_OVERHEAD + 8 + (0 if name in self._lists else _LIST_OVERHEAD)
        if not self._room(cost, deferral):
            return False
        self._lists.setdefault(name, []).append(row)
        self.size += cost
        return True

    def add_group(self, level: int, parent: int, hashes: bytes) -> bool:
        record = parent.to_bytes(self._idw, "big") + hashes
        if not self._room(len(record) + _ROW_OVERHEAD + _LIST_OVERHEAD, False):
            return False
        return self._work(self._fanout * self._idw, self._fanout * self._group_bytes) and self._append_blob(
            "g", level, record)

    def add_sketch(self, level: int, parent: int, sketch: bytes) -> bool:
        """A sketch of parent's children: the answer is one node's expansion, or the full group if several differ."""
        record = parent.to_bytes(self._idw, "big") + sketch
        if not self._room(len(record) + _ROW_OVERHEAD + _LIST_OVERHEAD, False):
            return False
        return self._work(self._idw, self._group_bytes) and self._append_blob("sk", level, record)

    def add_differs(self, level: int, node: int) -> bool:
        """Ask the peer to expand ``node`` with its full group (a sketch showed several differing children)."""
        if not self._room(self._idw + _ROW_OVERHEAD + _LIST_OVERHEAD, False):
            return False
        record = node.to_bytes(self._idw, "big")
        return self._work(self._idw, self._group_bytes) and self._append_blob("d", level, record)

    def add_entries(self, leaf: int, entries: bytes, count: int, form: int, reply_estimate: int = 0) -> bool:
        if count > 0xFFFF:
            return False
        record = leaf.to_bytes(self._idw, "big") + listing_head(count, form) + entries
        if not self._room(len(record) + _ROW_OVERHEAD + _LIST_OVERHEAD, False):
            return False
        return self._work(self._idw, reply_estimate) and self._append_blob("e", None, record)

    def add_want(self, leaf: int, fingerprint: bytes) -> bool:
        if not self._room(self._idw + len(fingerprint) + _ROW_OVERHEAD + _LIST_OVERHEAD, False):
            return False
        return self._work(self._idw) and self._append_blob("w", None, leaf.to_bytes(self._idw, "big") + fingerprint)

    def fits_state(self, key: bytes, state: bytes) -> bool:
        return self._room(len(key) + len(state) + _ROW_OVERHEAD + 8 + _LIST_OVERHEAD, False)

    def add_state(self, key: bytes, state: bytes, flag: bool) -> bool:
        if not self.fits_state(key, state) or not self._work(self._idw if flag else 0):
            return False
        return self._append_row("k", [key, state, flag], len(key) + len(state))

    def add_chunk(self, key: bytes, flag: bool, chunk: Chunk) -> bool:
        cost = len(key) + len(chunk.data) + CHUNK_OVERHEAD_BYTES
        if not self._room(cost + _ROW_OVERHEAD + 8 + _LIST_OVERHEAD, False) or not self._work(self._idw if flag else 0):
            return False
        return self._append_row("c", [key, flag, chunk.to_wire()], cost)

    def add_chunk_want(self, key: bytes, tid: bytes, index: int, flag: bool) -> bool:
        # The answer is one chunk that fills a reply, and possibly a "more" note.
        note = len(key) + len(tid) + _ROW_OVERHEAD + 8 + _LIST_OVERHEAD
        if not self._room(note, False) or not self._work(note, self._expansion_budget):
            return False
        return self._append_row("cw", [key, tid, index, flag], len(key) + len(tid))

    def add_gone(self, tid: bytes) -> bool:
        if not self._room(len(tid) + 2 + _LIST_OVERHEAD, True):
            return False
        self._lists.setdefault("x", []).append(tid)
        self.size += len(tid) + 2 + _LIST_OVERHEAD
        return True

    def add_deferral(self, item: tuple, tree: MerkleTree) -> bool:
        """Leave a note for work that did not fit: the peer re-asks for it (responder side)."""
        kind = item[0]
        if kind in ("x", "d"):
            if (item[1], item[2]) in self._deferred_leaves:
                return True
            self._deferred_leaves.add((item[1], item[2]))
            return self._append_blob("d", item[1], item[2].to_bytes(self._idw, "big"), deferral=True)
        if kind in ("w", "s", "e", "wi"):  # leaf-derived work: ask the peer to list that leaf again (once per leaf)
            leaf = tree.leaf_of(item[1]) if kind == "s" else item[1]
            if (tree.depth, leaf) in self._deferred_leaves:
                return True
            self._deferred_leaves.add((tree.depth, leaf))
            return self._append_blob("d", tree.depth, leaf.to_bytes(self._idw, "big"), deferral=True)
        if kind == "c":
            _, key, tid, index, flag = item
            return self._append_row("m", [key, tid, index, flag], len(key) + len(tid), deferral=True)
        return False

    @property
    def empty(self) -> bool:
        return not self._lists and not self._flat

    def encode(self, kind: int) -> bytes:
        body: dict[str, object] = {name: [[h, bytes(b)] for h, b in rows] if name in {"g", "sk", "d"} else rows
                                   for name, rows in self._lists.items()}
        body.update((name, bytes(blob)) for name, blob in self._flat.items())
        if self._scalar_salt is not None:
            body["s"] = self._scalar_salt
        if self._count is not None:
            body["n"] = self._count
        message = encode_message(kind, body)
        if len(message) > self._max:
            raise PacketTooLargeError(len(message), self._max)
        return message


__all__ = [
    "LISTING_FINGERPRINTS",
    "LISTING_SIZES",
    "LISTING_TAGS",
    "AntiEntropyProtocolError",
    "Composer",
    "Exchange",
    "decode_message",
    "encode_message",
    "entry_width",
    "id_width",
    "listing_head",
    "reply_content_limit",
    "size_hint",
]
