"""Bulk catch-up: a node far behind its peer pulls whole leaves of states in large batches instead of descending.

Why: the tree descent is built for *few* differences. For a node that holds nothing (or far less than its peer),
every leaf differs, so the descent spends round trips listing leaves and asking for their keys, and every state
arrives as a flagged push the receiver decodes and merges one by one. At 1M keys that is about 4k keys/s. Here the
behind side (always the session's initiator, so the responder stays stateless) walks the leaves in order:

1. BULK ``{c: leaf, i: skip, h: slices, s: salt}``: "from leaf ``c`` (its first ``i`` keys already sent), these are
   my hashes of leaves ``c, c+1, ...``" (``hash_bytes`` slices at the session's offset, at most `MAX_BULK_LEAVES`).
2. BULK_STATES ``{k: [[key, state], ...], c: leaf, i: skip}``: the responder's states of every leaf in that range
   whose hash differs from the requester's, in leaf then key order, as many as fit one reply, and where the next
   request starts (``c == leaf_count`` when the walk is over). A leaf both hold alike costs 3 bytes, so a node that
   holds half the keys pays for the other half only; a state too big for a reply is skipped (the descent that
   follows the walk sends it in chunks).

The requester then stores the states of keys it does not hold *as they are* (the application's ``install``: no
decode, no merge, one batch a reply) and merges only those it holds whose digest differs. When the walk is over the
session goes on as an ordinary descent from the root, which repairs whatever the walk could not (keys the requester
holds that the responder lacks, states too big for a reply, writes made meanwhile), so a complete session means what
it always meant.

The responder's cost per request is bounded like any step: at most `MAX_BULK_LEAVES` leaves compared and one reply
of states read (sizes are known from the tree's hints, so an oversized state is skipped unread). Pacing the
requests (so the responder's own clients do not wait behind them) is the application's: it sees each request.
Only a peer known to read BULK gets one (`wire`): an older responder would answer ERROR and fail the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rumor.gossip.anti_entropy.composer import reply_content_limit
from rumor.gossip.anti_entropy.merkle import MerkleTree, slice_hash
from rumor.gossip.anti_entropy.wire import (
    AntiEntropyMessageType,
    AntiEntropyProtocolError,
    encode_message,
)
from rumor.gossip.errors import PacketTooLargeError

LEAVES_A_READ = 64
"""Leaves a responder lists in one read of its tree at most (a reply of small states spans 20-200 leaves)."""
FIRST_LEAVES_A_READ = 8
"""Leaves of a reply's first read: the next reads take about as many leaves as the room left needs at the bytes a
leaf brought so far (each read brings its leaves' states too: reading 64 leaves for a reply that takes 25 made
the responder read and convert 2.5 times the rows it sends)."""
STATES_A_READ = 256
"""States a responder reads at once for a reply (about a quarter of a reply of small states)."""
MAX_BULK_LEAVES = 2048
"""Leaves one BULK request covers at most: 6 KB of 3-byte hashes, and a bound on the responder's comparisons."""
FIRST_SPAN_LEAVES = 64
"""Leaves a walk's first request (and any after a reply that covered few) carries hashes of."""
BULK_MIN_PEER_KEYS = 1000
"""A peer with fewer keys is caught up by the descent alone: a walk over every leaf would not pay."""
BULK_BEHIND_RATIO = 0.5
"""Walk when we hold fewer than this fraction of the peer's key count: "far behind" (an empty node, or one that was
away for a long time). Nearer than that, the descent sends about what differs and costs less than a walk."""
_ROW_OVERHEAD = 12  # row array header + two bin headers, upper bound
_REPLY_OVERHEAD = 64  # type byte, map header, cursor fields, list header

GetStateFn = Callable[[bytes], "bytes | None"]
GetStatesFn = Callable[[list[bytes]], dict[bytes, bytes]]
"""``get_state`` of many keys at once: those that exist."""


def should_walk(my_keys: int, peer_keys: int) -> bool:
    """Whether a session should walk the leaves rather than descend: the peer holds many keys and we few of them."""
    return peer_keys >= BULK_MIN_PEER_KEYS and my_keys < BULK_BEHIND_RATIO * peer_keys


@dataclass(slots=True)
class BulkReply:
    """A validated BULK_STATES: ``rows`` of ``(key, state)`` and the cursor of the next request."""

    rows: list[tuple[bytes, bytes]]
    leaf: int
    skip: int


def _fail(detail: str) -> AntiEntropyProtocolError:
    return AntiEntropyProtocolError("malformed_bulk", detail)


def _cursor(body: dict[str, object], leaf_count: int) -> tuple[int, int]:
    leaf, skip = body.get("c"), body.get("i")
    if type(leaf) is not int or not 0 <= leaf <= leaf_count or type(skip) is not int or not 0 <= skip < 1 << 20:
        raise _fail("cursor out of range")
    if leaf == leaf_count and skip:
        raise _fail("cursor past the last leaf")
    return leaf, skip


class BulkWalk:
    """The requester's side of a walk: where it stands, the next request, and what a reply brings."""

    def __init__(self, tree: MerkleTree, salt: int, width: int) -> None:
        self.tree = tree
        self.salt = salt
        self.width = width
        self.leaf = 0
        self.skip = 0
        self.requests = 0
        self.span = FIRST_SPAN_LEAVES
        """Leaves the next request carries hashes of: a few times what the last reply covered (hashing and sending
        2048 leaves a request when a reply covers 30 cost the requester ~5 ms a round trip)."""

    @property
    def done(self) -> bool:
        return self.leaf >= self.tree.leaf_count

    def request(self) -> bytes:
        """The next BULK: the cursor and our hashes of the leaves it may cover."""
        tree, depth = self.tree, self.tree.depth
        end = min(tree.leaf_count, self.leaf + self.span)
        hashes = b"".join(slice_hash(tree.node_int(depth, leaf), self.salt, self.width)
                          for leaf in range(self.leaf, end))
        self.requests += 1
        return encode_message(AntiEntropyMessageType.BULK, {"c": self.leaf, "h": hashes, "i": self.skip,
                                                            "s": self.salt})

    def absorb(self, body: object) -> BulkReply:
        """Validate a BULK_STATES body and move the cursor; a reply that does not move it forward is refused (a
        responder cannot keep a walk going forever)."""
        if not isinstance(body, dict) or set(body) != {"c", "i", "k"}:
            raise _fail("a reply is {c, i, k}")
        leaf, skip = _cursor(body, self.tree.leaf_count)
        if (leaf, skip) <= (self.leaf, self.skip) or leaf > self.leaf + self.span:
            raise _fail(f"cursor {(leaf, skip)} does not follow {(self.leaf, self.skip)}")
        raw = body["k"]
        if not isinstance(raw, list):
            raise _fail("k must be a list")
        rows: list[tuple[bytes, bytes]] = []
        keys: set[bytes] = set()
        for row in raw:
            if not (isinstance(row, list) and len(row) == 2 and type(row[0]) is bytes and type(row[1]) is bytes
                    and row[0]):
                raise _fail("a row is [key, state]")
            if row[0] in keys:
                raise _fail("a key twice in one reply")
            keys.add(row[0])
            rows.append((row[0], row[1]))
        self.span = max(FIRST_SPAN_LEAVES, min(MAX_BULK_LEAVES, 4 * (leaf - self.leaf)))
        self.leaf, self.skip = leaf, skip
        return BulkReply(rows, leaf, skip)


def answer_bulk(tree: MerkleTree, get_state: GetStateFn, body: object, width: int,
                max_message_bytes: int, get_states: GetStatesFn | None = None) -> tuple[bytes, int, int]:
    """The responder's BULK_STATES for a BULK body (stateless: everything it needs is in the request), with the
    count and bytes of the states it carries. The leaves that differ are listed `LEAVES_A_READ` at a time, with
    their stored states (`MerkleTree.leaves_states`: one read over disk); the states not read with them (those
    of keys changed since stored, or of a tree in memory) through ``get_states`` `STATES_A_READ` at a time, ahead
    of the reply (a point read a key and a listing a leaf made answering a 200k-key walk's request take 30-120 ms;
    a listing and then a batch read of the states, two more random reads a key, 40 µs a key served)."""
    if not isinstance(body, dict) or set(body) != {"c", "h", "i", "s"}:
        raise _fail("a request is {c, h, i, s}")
    leaf, skip = _cursor(body, tree.leaf_count)
    salt, hashes = body["s"], body["h"]
    if type(salt) is not int or not 0 <= salt <= 16 - width:
        raise _fail("bad slice offset")
    if type(hashes) is not bytes or len(hashes) % width or len(hashes) // width > MAX_BULK_LEAVES:
        raise _fail("bad leaf hashes")
    first = leaf
    end = min(tree.leaf_count, leaf + len(hashes) // width)
    if end <= leaf and leaf < tree.leaf_count:
        raise _fail("no leaf hashes")
    limit = reply_content_limit(max_message_bytes)
    room = limit - _REPLY_OVERHEAD
    rows: list[list[bytes]] = []
    depth = tree.depth
    want = FIRST_LEAVES_A_READ
    while leaf < end:
        group: list[int] = []  # the next leaves that differ (the cursor's own, part-sent, always does)
        scanned = leaf
        while scanned < end and len(group) < want:
            at = (scanned - first) * width
            if (skip and scanned == leaf) or \
                    slice_hash(tree.node_int(depth, scanned), salt, width) != hashes[at : at + width]:
                group.append(scanned)
            scanned += 1
        listed, ready = tree.leaves_states(group, limit - _REPLY_OVERHEAD) if group else ({}, {})
        keys = [(g, index, key) for g in group
                for index, (key, _) in enumerate(listed[g]) if (index >= skip or g != leaf)
                and _fits(tree.size_of(key), key, limit)]  # too big for any reply: the descent sends it in chunks
        states = _ReadAhead([key for _, _, key in keys if key not in ready], get_state, get_states, ready)
        room_before = room
        for g, index, key in keys:
            state = states.get(key)
            if state is None:
                continue
            cost = len(key) + len(state) + _ROW_OVERHEAD
            if cost > room:
                if cost > limit - _REPLY_OVERHEAD:
                    continue  # a state bigger than its hint said: left to the descent as well
                return _reply(rows, g, index, max_message_bytes, limit - _REPLY_OVERHEAD - room)
            rows.append([key, state])
            room -= cost
        leaf, skip = scanned, 0
        spent = room_before - room
        want = LEAVES_A_READ if spent <= 0 else min(LEAVES_A_READ, room * len(group) // spent + 2)
    return _reply(rows, leaf, 0, max_message_bytes, limit - _REPLY_OVERHEAD - room)


class _ReadAhead:
    """The states of ``keys``, asked in their order: read `STATES_A_READ` at a time through ``get_states`` (only
    as far as the reply gets), or one by one through ``get_state`` when there is no batch read; those in ``ready``
    (read with the listing: `MerkleTree.leaves_states`) are not read again."""

    def __init__(self, keys: list[bytes], get_state: GetStateFn, get_states: GetStatesFn | None,
                 ready: dict[bytes, bytes]) -> None:
        self._ready = ready
        self._keys = keys
        self._get_state = get_state
        self._get_states = get_states
        self._next = 0  # the first key not read yet, when asked in order
        self._chunk: set[bytes] = set()
        self._batch: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        held = self._ready.get(key)
        if held is not None:
            return held
        if self._get_states is None:
            return self._get_state(key)
        if key not in self._chunk:
            keys = self._keys
            at = self._next if self._next < len(keys) and keys[self._next] == key else keys.index(key)
            ahead = keys[at : at + STATES_A_READ]
            self._next = at + len(ahead)
            self._chunk = set(ahead)
            self._batch = self._get_states(ahead)
        return self._batch.get(key)


def _fits(hint: int, key: bytes, limit: int) -> bool:
    """Whether a state of ``hint`` bytes (0: not known) may fit a reply at all."""
    return not hint or hint + len(key) + _ROW_OVERHEAD <= limit - _REPLY_OVERHEAD


def _reply(rows: list[list[bytes]], leaf: int, skip: int, max_message_bytes: int,
           used: int) -> tuple[bytes, int, int]:
    message = encode_message(AntiEntropyMessageType.BULK_STATES, {"c": leaf, "i": skip, "k": rows})
    if len(message) > max_message_bytes:
        raise PacketTooLargeError(len(message), max_message_bytes)
    return message, len(rows), used - _ROW_OVERHEAD * len(rows)


__all__ = ["BULK_BEHIND_RATIO", "BULK_MIN_PEER_KEYS", "MAX_BULK_LEAVES", "BulkReply", "BulkWalk", "GetStatesFn",
           "answer_bulk", "should_walk"]
