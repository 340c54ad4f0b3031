"""Composing one EXCHANGE message within its size bound (and, for requests, within the work it may ask for).

The record layouts are `wire`'s; this module decides what still fits. Sizes are counted as upper bounds while adding,
so a message is never built past its limit; the encoded bytes are checked against the real limit at the end.
"""

from __future__ import annotations

from rumor.gossip.anti_entropy.chunking import CHUNK_OVERHEAD_BYTES, Chunk
from rumor.gossip.anti_entropy.config import AntiEntropyConfig
from rumor.gossip.anti_entropy.merkle import MerkleTree
from rumor.gossip.anti_entropy.wire import AntiEntropyMessageType, encode_message, id_width, listing_head
from rumor.gossip.errors import PacketTooLargeError

_LIST_OVERHEAD = 8  # field name + array header, upper bound
_ROW_OVERHEAD = 12  # row array header + int + bin header, upper bound


def reply_content_limit(max_message_bytes: int) -> int:
    """Bytes of content a reply may carry; the remaining eighth is reserved for deferral notes."""
    return max_message_bytes - max_message_bytes // 8


class Composer:
    """Builds one EXCHANGE body without ever exceeding the size limit.

    Replies: content (hashes, entries, states, chunks) may use `reply_content_limit` bytes; deferrals (the tiny
    notes a stateless responder leaves for work it could not fit) may use the rest. Requests (``salt`` given) are
    also capped in *work*: each item is charged the bytes of the deferral notes it could cost the responder, and
    hash groups the bytes of the groups they could expand into, so an answer always fits its reply without drops.
    """

    def __init__(self, tree: MerkleTree, config: AntiEntropyConfig, salt: int | None,
                 count: int | None = None, features: int = 0) -> None:
        self._idw = id_width(tree)
        self._fanout = tree.fanout
        self._max = config.max_message_bytes
        self._states_left = config.max_states_per_message
        reply_limit = reply_content_limit(self._max)
        self._deferral_budget = self._max - reply_limit - 256 if salt is not None else None
        self._expansion_budget = reply_limit - 512
        self._group_bytes = self._idw + tree.fanout * config.hash_bytes
        self._noted_nodes: set[tuple[int, int]] = set()
        self._charged = False
        self.content_limit = self._max if salt is not None else reply_limit
        self.full = False
        """Set once some content did not fit: lazy work is then deferred without being done."""
        self.size = 16 + (10 if count is not None else 0) + (4 if salt is not None else 0) + (7 if features else 0)
        self._salt = salt
        self._count = count
        self._features = features
        self._rows: dict[str, list[object]] = {}  # k, c, m, cw, x: one msgpack array per row
        self._level_blobs: dict[str, list[tuple[int, bytearray]]] = {}  # g, sk, d: one blob of records per level
        self._flat: dict[str, bytearray] = {}  # e, w: one blob of records
        self._blobs: dict[tuple[str, int | None], bytearray] = {}  # every blob, by field and level (None: flat)

    @property
    def empty(self) -> bool:
        return not self._rows and not self._level_blobs and not self._flat

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

    def _append_blob(self, name: str, level: int | None, record: bytes, deferral: bool = False) -> bool:
        """Add a fixed-width record to the blob ``name`` (one per ``level``, or one flat blob if None)."""
        blob = self._blobs.get((name, level))
        cost = len(record) + (0 if blob is not None else _ROW_OVERHEAD + _LIST_OVERHEAD)
        if not self._room(cost, deferral):
            return False
        if blob is None:
            blob = self._blobs[(name, level)] = bytearray()
            if level is None:
                self._flat[name] = blob
            else:
                self._level_blobs.setdefault(name, []).append((level, blob))
        blob += record
        self.size += cost
        return True

    def _append_row(self, name: str, row: list[object], payload: int, deferral: bool = False) -> bool:
        cost = payload + _ROW_OVERHEAD + 8 + (0 if name in self._rows else _LIST_OVERHEAD)
        if not self._room(cost, deferral):
            return False
        self._rows.setdefault(name, []).append(row)
        self.size += cost
        return True

    # -- content ---------------------------------------------------------------------------------------------

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
        """Whether the message has room for the state, in bytes and in its count (`max_states_per_message`)."""
        if self._states_left <= 0:
            self.full = True
            return False
        return self._room(len(key) + len(state) + _ROW_OVERHEAD + 8 + _LIST_OVERHEAD, False)

    def add_state(self, key: bytes, state: bytes, pushback: bool) -> bool:
        if not self.fits_state(key, state) or not self._work(self._idw if pushback else 0):
            return False
        if not self._append_row("k", [key, state, pushback], len(key) + len(state)):
            return False
        self._states_left -= 1
        return True

    def add_context(self, key: bytes, context: bytes, answer: bool) -> bool:
        """A context row: the reply is at most a diff and (unless ``answer``) a row back, or a leaf note if neither
        fits, like a flagged state's."""
        if not self._room(len(key) + len(context) + _ROW_OVERHEAD + 8 + _LIST_OVERHEAD, False) or not self._work(
                self._idw):
            return False
        return self._append_row("cx", [key, context, answer], len(key) + len(context))

    def add_chunk(self, key: bytes, pushback: bool, chunk: Chunk) -> bool:
        cost = len(key) + len(chunk.data) + CHUNK_OVERHEAD_BYTES
        if not self._room(cost + _ROW_OVERHEAD + 8 + _LIST_OVERHEAD, False) or not self._work(
                self._idw if pushback else 0):
            return False
        return self._append_row("c", [key, pushback, chunk.to_wire()], cost)

    def add_chunk_want(self, key: bytes, tid: bytes, index: int, pushback: bool) -> bool:
        # The answer is one chunk that fills a reply, and possibly a "more" note.
        note = len(key) + len(tid) + _ROW_OVERHEAD + 8 + _LIST_OVERHEAD
        if not self._room(note, False) or not self._work(note, self._expansion_budget):
            return False
        return self._append_row("cw", [key, tid, index, pushback], len(key) + len(tid))

    # -- deferral notes (responder side: work that did not fit, for the peer to ask again) ---------------------

    def add_node_note(self, level: int, node: int) -> bool:
        """Ask the peer to send ``node`` again (its group, or its listing at the leaf level); once per node."""
        if (level, node) in self._noted_nodes:
            return True
        self._noted_nodes.add((level, node))
        return self._append_blob("d", level, node.to_bytes(self._idw, "big"), deferral=True)

    def add_more_chunks(self, key: bytes, tid: bytes, index: int, pushback: bool) -> bool:
        """Tell the peer that chunks ``index``... of transfer ``tid`` are available on request."""
        return self._append_row("m", [key, tid, index, pushback], len(key) + len(tid), deferral=True)

    def add_gone(self, tid: bytes) -> bool:
        """Tell the peer to abandon transfer ``tid``: the state it was sending has changed."""
        if not self._room(len(tid) + 2 + _LIST_OVERHEAD, True):
            return False
        self._rows.setdefault("x", []).append(tid)
        self.size += len(tid) + 2 + _LIST_OVERHEAD
        return True

    def encode(self, kind: AntiEntropyMessageType) -> bytes:
        body: dict[str, object] = dict(self._rows)
        for name, blobs in self._level_blobs.items():
            body[name] = [[level, bytes(blob)] for level, blob in blobs]
        body.update((name, bytes(blob)) for name, blob in self._flat.items())
        if self._salt is not None:
            body["s"] = self._salt
        if self._count is not None:
            body["n"] = self._count
        if self._features:
            body["ft"] = self._features
        message = encode_message(kind, body)
        if len(message) > self._max:
            raise PacketTooLargeError(len(message), self._max)
        return message


__all__ = ["Composer", "reply_content_limit"]
