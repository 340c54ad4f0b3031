"""Push-pull anti-entropy between two replicas of a keyspace of opaque states, as pure state machines.

Shape of a session (initiator ``I``, responder ``R``; ``R`` keeps **no per-session state**):

1. ``I -> R`` HELLO: tree shape, the full 16-byte root, key count, and a slice offset ``s`` (below).
   Equal roots: ``R`` answers IN_SYNC and the session is over.
2. Otherwise the two sides alternate EXCHANGE messages. Whoever learns that node ``n`` differs sends *its own*
   hashes of ``n``'s children; the other compares them with its own and answers with the children hashes of the
   ones that differ, so each message descends one level and every round trip descends two. Where differences are
   sparse, ``n`` goes as a **sketch** of its children instead (`merkle.sketch_of`: 4 slices instead of 8 at fanout
   8) that names the one differing child; a sketch that shows several asks the sender for its full group ("d"), so
   the same side keeps listing the leaves. Which form a node takes follows the differing children per differing
   parent seen at its level in the message just received (`merkle.sketch_pays_below`): the dense top of the tree
   goes by groups, the sparse bottom by sketches, with no extra negotiation.
   At a leaf the sender lists its entries in one of three forms, chosen per leaf (`anti_entropy_wire.LISTING_*`):
   ``(key fingerprint, digest slice, size hint)`` when the tree has sizes; else 3-byte *entry tags* (a hash of key
   and digest, `merkle.entry_tag`) from two keys a leaf, or ``(fingerprint, digest slice)`` for a lone key. The
   receiver pushes its states the lister lacks; a key both hold differently it pushes at once unless the hints say
   the lister's is larger (then it wants it); it wants the versions it lacks (by fingerprint, or by tag: tags cannot
   pair two versions of one key, so it also wants the lister's old version of a key it is pushing, which the lister
   then skips). A push of a key the other may hold (and an answered want) carries a flag: the receiver merges and,
   if its merged state's digest differs from the one it received, pushes its merged state back. Both directions
   are repaired in one session. A key one side dominates costs one state transfer when the hints tell, or when the
   side diffing the listing is the newer one; two otherwise. The initiator lists (the responder diffs) unless a
   deferral moved the listing: a lagging node tends to be the one starting sessions, and is then the older side.
3. States too big for one message go as `gossip.chunking` chunks, reassembled in a bounded `Reassembler`.

Why the wire uses **3-byte slices** (``hash_bytes``) of the 16-byte node hashes and digests: locating ``d``
differences costs about ``d * fanout * width`` bytes per level near the leaves, so width dominates. A 3-byte slice
lets a differing node pass as equal with probability 2**-24; the initiator draws the slice *offset* ``s`` per session
from its injected ``random.Random`` (key fingerprints rotate with it), so an unlucky collision only delays that key to
a later session instead of hiding it forever. The root is always compared in full. Sketch values, fingerprints
and entry tags are 3 bytes too, so every shortcut in this protocol fails with the same ~2**-24 odds, and the same
way: a difference left for the next session.

Why listings carry a **size hint** when the tree has sizes: for a key both sides hold differently, one side must
send first. Sending the smaller state first wastes a transfer whenever the other side dominates; join-semilattice
states grow, so the larger state is usually the newer one, and that side pushes first (`MerkleTree.set` takes the
size; 0 means unknown). When the hints tie or are unknown, the side diffing the listing pushes at once (flagged):
that is one transfer if it is the newer side, two if not, where asking first would cost a want, a round trip and
the same transfers.

Expected bytes at 100k keys (fanout 8, depth 5: 32,768 leaves, ~3 keys a leaf):

* idle (converged): HELLO 44 bytes + IN_SYNC 2 bytes = 46 bytes, whatever the key count (target < 2 KiB).
* 100 differing keys: nodes that differ per level ~1, 8, 51, 91, 99, 100. The dense levels 1-3 go as full groups
  (8 x 3 bytes + a 2-byte id): ~1.5 KB; levels 4 and 5 as sketches (4 x 3 + 2 bytes), plus a few full groups where
  a sketch showed two differences: ~2.6 KB. Leaf listings by tags ~100 x (3 + 4 keys x 3 bytes) = 1.5 KB and
  ~0.5 KB of wants (by fingerprint with sizes: 2.7 KB, few wants); keys and framing of the states ~1.7 KB.
  Replication bench (67-byte counters, no size hints, responder newer): 14.9 KB, 2.2x the 6.7 KB of states (was
  25.7 KB, 3.8x). ``bench/anti_entropy_bench.py`` (64-200 byte states, with sizes): 24 KB (1.7-1.8x the states)
  when either side is newer, 43 KB (1.4x both sides' states) for concurrent edits; 0.002-0.003x a 14.8 MB
  full-state transfer; 5-6 round trips.

Bounded everything: each message is at most ``max_message_bytes`` (framing included, checked on the encoded bytes);
requests are capped in the work they can ask for, the responder does lazy work (leaf diffs, state reads) only while
its reply has room and turns the rest into tiny deferrals the initiator re-asks for (dropping and counting only
what not even those fit); the initiator's queue holds at most ``max_pending`` items and a session at most
``max_rounds`` round trips. A fresh node catching up 100k keys therefore costs the serving node one bounded step
per request (measured: ~390 requests, every message <= 53 KB, slowest step ~80 ms on a loaded 2-core box).

Caller contract: ``merge(key, state)`` must join the state into the store *and* update the tree
(``tree.set(key, state_digest(new), len(new))``), as every local write does; ``get_state`` returns the
deterministic encoding (equal states, equal bytes) or None. ``check(key, state)``, if given, runs on every state of
a message before any of them is merged, so a state it rejects aborts the session with nothing from that message
merged.

Garbage from the peer (bad type, bad msgpack, wrong shapes, out-of-range ids, bad chunks) raises
`AntiEntropyProtocolError` before anything in that message is merged, and aborts the initiator's session.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from gossip.anti_entropy_wire import (
    LISTING_FINGERPRINTS,
    LISTING_SIZES,
    LISTING_TAGS,
    SIZE_HINT_BYTES,
    AntiEntropyProtocolError,
    Composer,
    Exchange,
    decode_message,
    encode_message,
    entry_width,
    id_width,
    reply_content_limit,
    size_hint,
)
from gossip.chunking import Chunk, ChunkError, Reassembler, transfer_id_of
from gossip.errors import ConfigError, GossipError
from gossip.merkle import (
    DIGEST_BYTES,
    KEY_HASH_BYTES,
    MerkleTree,
    entry_tag,
    key_fingerprint,
    locate_child,
    sketch_of,
    sketch_pays_below,
    slice_hash,
    state_digest,
)

GetState = Callable[[bytes], "bytes | None"]
Merge = Callable[[bytes, bytes], None]
CheckState = Callable[[bytes, bytes], None]

PROTOCOL_VERSION = 2


class AntiEntropyMessageType(IntEnum):
    """First byte of every anti-entropy message. Append-only."""

    HELLO = 0x41
    IN_SYNC = 0x42
    EXCHANGE = 0x43
    ERROR = 0x44


class AntiEntropyPeerError(GossipError):
    """The responder refused the session (shape mismatch, malformed request): its reason is in ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"peer rejected anti-entropy: {reason}")
        self.reason = reason


class AntiEntropyMergeError(GossipError, ValueError):
    """The caller's ``check``/``merge`` refused a state received from the peer; the session was aborted."""

    def __init__(self, key: bytes, cause: BaseException) -> None:
        super().__init__(f"state for key {key[:32]!r} rejected: {cause}")
        self.key = key
        self.cause = cause


@dataclass(frozen=True, slots=True)
class AntiEntropyConfig:
    """Knobs shared by both sides. ``max_message_bytes`` must leave room for the transport's own framing/sealing."""

    max_message_bytes: int = 60 * 1024
    hash_bytes: int = 3
    max_pending: int = 200_000
    max_rounds: int = 10_000

    def __post_init__(self) -> None:
        if self.max_message_bytes < 4096:
            raise ConfigError("max_message_bytes", self.max_message_bytes, "must be >= 4096")
        if not 2 <= self.hash_bytes <= DIGEST_BYTES:
            raise ConfigError("hash_bytes", self.hash_bytes, f"must be in 2..{DIGEST_BYTES}")
        if self.max_pending < 1 or self.max_rounds < 1:
            raise ConfigError("max_pending", self.max_pending, "bounds must be positive")


@dataclass(slots=True)
class AntiEntropyStats:
    """What one session (or one responder, over all its requests) moved: the figures the benches report."""

    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    states_sent: int = 0
    states_received: int = 0
    state_bytes_sent: int = 0
    state_bytes_received: int = 0
    pushbacks: int = 0
    dropped_items: int = 0
    errors: dict[str, int] = field(default_factory=dict)


# Work items, in the order they are placed into outgoing messages. Kinds:
#   "x" (level, node, sketch): send my hashes (or a sketch) of node's children, or my leaf listing at the leaf level
#   "d" (level, node): ask for the peer's full group of node's children    "w" (leaf, fingerprint): ask for states
#   "s" (key, flag): send my state    "c" (key, tid, index, flag): chunks
#   "m" (key, tid, index, flag): ask for more chunks
# and two lazy kinds, done only while the message has room: "e" (leaf, listing, form) diff a peer's leaf listing,
# "wi" (leaf, fingerprint) answer a peer's want.
Item = tuple


class _Replica:
    """What both roles share: the tree, the caller's store callbacks, the reassembler and the absorb/compose logic."""

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge, config: AntiEntropyConfig,
                 check: CheckState | None, reassembler: Reassembler | None) -> None:
        self.tree = tree
        self.get_state = get_state
        self.merge = merge
        self.check = check
        self.config = config
        self.reassembler = reassembler or Reassembler()
        self.stats = AntiEntropyStats()
        self._cached: tuple[bytes, bytes, bytes] | None = None  # key, state, transfer id of the last big state
        # A chunk must fit an otherwise empty reply.
        self.chunk_bytes_base = reply_content_limit(config.max_message_bytes) - 512
        self.peer_keys: int | None = None  # the responder's key count, learnt by the initiator from the first reply
        self._just_received: set[bytes] = set()  # keys whose states the message being answered carried
        self.sketch_below = sketch_pays_below(tree.fanout, config.hash_bytes, id_width(tree))

    # -- absorbing what the peer sent ------------------------------------------------------------------------

    def absorb(self, ex: Exchange, salt: int) -> list[Item]:
        """Apply a *validated* exchange: merge its states, compare its hashes; return the follow-up work."""
        tree = self.tree
        states: list[tuple[bytes, bytes, bool]] = list(ex.states)
        for key, flag, chunk in ex.chunks:
            try:
                value = self.reassembler.add(chunk, context=key)
            except ChunkError as exc:
                self._count_error(exc.reason)
                continue
            if value is not None:
                states.append((key, value, flag))
        if self.check is not None:
            for key, state, _flag in states:
                try:
                    self.check(key, state)
                except Exception as exc:  # the caller's decoder: whatever it raises means "not a valid state"
                    raise AntiEntropyMergeError(key, exc) from exc
        work: list[Item] = []
        self._just_received = {key for key, _, _ in states}
        for key, state, flag in states:
            try:
                self.merge(key, state)
            except Exception as exc:
                raise AntiEntropyMergeError(key, exc) from exc
            self.stats.states_received += 1
            self.stats.state_bytes_received += len(state)
            if flag and tree.get(key) != state_digest(state):
                self.stats.pushbacks += 1
                work.append(("s", key, False))
        for tid in ex.gone:
            self.reassembler.abandon(tid)
        work.extend(self._compare_nodes(ex, salt))
        # Leaf entries and wants are expanded lazily (`fill`): a full reply defers them without doing the work.
        work.extend(("e", leaf, entries, form) for leaf, entries, form in ex.entries)
        for level, node in ex.differs:
            work.append(("x", level, node, False))
        work.extend(("wi", leaf, fingerprint) for leaf, fingerprint in ex.wants)
        for key, tid, index, flag in ex.more:
            work.append(("m", key, tid, index, flag))
        for key, tid, index, flag in ex.chunk_wants:
            work.append(("c", key, tid, index, flag))
        return work

    def _compare_nodes(self, ex: Exchange, salt: int) -> list[Item]:
        """Compare the peer's groups and sketches with our tree: the differing nodes, each to be expanded.

        Whether we expand a node with a sketch or a full group follows the differing children per differing parent
        seen at its level in this message (`sketch_pays_below`): many means the next level is dense too.
        """
        tree, width, fanout = self.tree, self.config.hash_bytes, self.tree.fanout
        found: list[tuple[int, int]] = []
        failed: list[Item] = []
        seen: dict[int, list[int]] = {}  # level -> [parents compared, differing children found]
        for level, parent, hashes in ex.groups:
            tally = seen.setdefault(level, [0, 0])
            tally[0] += 1
            for i, value in enumerate(tree.children_ints(level - 1, parent)):
                if slice_hash(value, salt, width) != hashes[i * width : (i + 1) * width]:
                    found.append((level, parent * fanout + i))
                    tally[1] += 1
        for level, parent, theirs in ex.sketches:
            mine = sketch_of(tree.children_ints(level - 1, parent))
            deltas = [int.from_bytes(slice_hash(v, salt, width), "big") ^ int.from_bytes(
                theirs[k * width : (k + 1) * width], "big") for k, v in enumerate(mine)]
            child = locate_child(deltas, fanout)
            tally = seen.setdefault(level, [0, 0])
            tally[0] += 1
            if child is None:
                # Several children differ: ask the sender for its full group rather than sending ours, so the same
                # side keeps listing the leaves below (which side that is decides who pushes on a tie).
                failed.append(("d", level - 1, parent))
                tally[1] += 2
            elif child >= 0:
                found.append((level, parent * fanout + child))
                tally[1] += 1
        sparse = {level: differing < parents * self.sketch_below for level, (parents, differing) in seen.items()}
        return [("x", level, node, sparse[level]) for level, node in found] + failed

    def _wanted_keys(self, leaf: int, tag: bytes, salt: int) -> list[bytes]:
        """Keys a want names (by fingerprint or entry tag), less those the same message brought: if ours still
        differs from what they sent, the push-back already carries it."""
        return [k for k, d in self.tree.leaf_items(leaf) if k not in self._just_received and (
            key_fingerprint(k, salt) == tag or entry_tag(k, d, salt) == tag)]

    def _diff_leaf(self, leaf: int, entries: bytes, form: int, salt: int) -> list[Item]:
        """Compare the peer's listing of a leaf with ours: push what they lack, want what we lack.

        For a key both hold differently, the side whose encoded state is larger (the size hint in the listing) is
        guessed to be newer and pushes first; the other merges and pushes back only if the result still differs.
        """
        width = self.config.hash_bytes
        if form == LISTING_TAGS:  # push every version they lack (flagged), want every tag we lack
            step = KEY_HASH_BYTES
            tags = {entries[i : i + step] for i in range(0, len(entries), step)}
            mine: set[bytes] = set()
            work: list[Item] = []
            for key, digest in self.tree.leaf_items(leaf):
                tag = entry_tag(key, digest, salt)
                mine.add(tag)
                if tag not in tags:
                    work.append(("s", key, True))
            return work + [("w", leaf, tag) for tag in sorted(tags - mine)]
        entry_bytes = KEY_HASH_BYTES + width
        step = entry_width(width, form)
        theirs: set[bytes] = set()
        their_size: dict[bytes, int] = {}
        for i in range(0, len(entries), step):
            theirs.add(entries[i : i + entry_bytes])
            fp = entries[i : i + KEY_HASH_BYTES]
            their_size[fp] = max(their_size.get(fp, 0), int.from_bytes(entries[i + entry_bytes : i + step], "big"))
        matched: set[bytes] = set()
        my_fps: set[bytes] = set()
        work: list[Item] = []
        wanted: set[bytes] = set()
        for key, digest in self.tree.leaf_items(leaf):
            fp = key_fingerprint(key, salt)
            my_fps.add(fp)
            entry = fp + digest[salt : salt + width]
            if entry in theirs:
                matched.add(entry)
            elif fp not in their_size:
                work.append(("s", key, False))
            elif 0 < size_hint(self.tree.size_of(key)) < their_size[fp]:
                wanted.add(fp)  # theirs is probably newer: it comes first, ours follows only if still needed
            else:
                work.append(("s", key, True))  # ours is larger, or nothing tells: push now, saving a round trip
        wanted.update(e[:KEY_HASH_BYTES] for e in theirs - matched if e[:KEY_HASH_BYTES] not in my_fps)
        work.extend(("w", leaf, fp) for fp in sorted(wanted))
        return work

    def _count_error(self, reason: str) -> None:
        self.stats.errors[reason] = self.stats.errors.get(reason, 0) + 1

    # -- composing what to send ------------------------------------------------------------------------------

    def big_state(self, key: bytes, tid: bytes | None) -> tuple[bytes, bytes] | None:
        """The state of ``key`` and its transfer id, from a one-slot cache (chunked sends re-ask once a message)."""
        if self._cached is not None and self._cached[0] == key and (tid is None or self._cached[2] == tid):
            return self._cached[1], self._cached[2]
        state = self.get_state(key)
        if state is None:
            return None
        self._cached = (key, state, transfer_id_of(state, key))
        if tid is not None and self._cached[2] != tid:
            return None
        return state, self._cached[2]

    def fill(self, composer: Composer, queue: deque[Item], salt: int) -> None:
        """Place work from the front of ``queue`` until the message is full; what is left stays queued, in order."""
        while queue:
            item = queue[0]
            if item[0] in ("e", "wi"):
                if composer.full:
                    return
                queue.popleft()
                if item[0] == "e":
                    expanded = self._diff_leaf(item[1], item[2], item[3], salt)
                else:
                    expanded = [("s", key, True) for key in self._wanted_keys(item[1], item[2], salt)]
                queue.extendleft(reversed(expanded))
                continue
            left = self.place(composer, item, salt)
            if left is None:
                queue.popleft()
            else:
                queue[0] = left
                return

    def entry_reply_estimate(self, my_keys_in_leaf: int) -> int:
        """Bytes the peer may answer a listing of one of our leaves with (states we probably lack)."""
        if self.peer_keys is None:
            return 0
        avg_state = self.stats.state_bytes_received // max(1, self.stats.states_received) or 256
        lacking = max(1, self.peer_keys // self.tree.leaf_count + 1 - my_keys_in_leaf)
        return lacking * (avg_state + 32)

    def place(self, composer: Composer, item: Item, salt: int) -> Item | None:
        """Put one work item into the message; return what is left of it (None when fully placed or moot)."""
        kind = item[0]
        tree, width = self.tree, self.config.hash_bytes
        if kind == "x":
            _, level, node, sketch = item
            if level < tree.depth and sketch:
                values = sketch_of(tree.children_ints(level, node))
                return None if composer.add_sketch(level + 1, node, b"".join(
                    slice_hash(v, salt, width) for v in values)) else item
            if level < tree.depth:
                blob = b"".join(slice_hash(v, salt, width) for v in tree.children_ints(level, node))
                return None if composer.add_group(level + 1, node, blob) else item
            items = tree.leaf_items(node)
            hints = [size_hint(tree.size_of(k)) for k, _ in items]
            # Entry tags are half the bytes but cannot pair two versions of a key, so the peer wants (5 bytes) each
            # version it lacks, even one it is pushing a newer state of: they pay from two keys a leaf, sizes never.
            form = LISTING_SIZES if any(hints) else LISTING_TAGS if len(items) >= 2 else LISTING_FINGERPRINTS
            if form == LISTING_TAGS:
                listing = b"".join(entry_tag(k, d, salt) for k, d in items)
            else:
                hint_bytes = SIZE_HINT_BYTES if form == LISTING_SIZES else 0
                listing = b"".join(key_fingerprint(k, salt) + d[salt : salt + width] + hint.to_bytes(
                    hint_bytes, "big") for (k, d), hint in zip(items, hints, strict=True))
            estimate = self.entry_reply_estimate(len(items))
            return None if composer.add_entries(node, listing, len(items), form, estimate) else item
        if kind == "w":
            return None if composer.add_want(item[1], item[2]) else item
        if kind == "d":
            return None if composer.add_differs(item[1], item[2]) else item
        if kind == "s":
            _, key, flag = item
            state = self.get_state(key)
            if state is None:
                return None
            if composer.add_state(key, state, flag):
                self._sent(state)
                return None
            if len(state) + len(key) + 64 <= self.chunk_bytes_base:
                return item  # fits an emptier message
            tid = transfer_id_of(state, key)
            self._cached = (key, state, tid)
            return self.place(composer, ("c", key, tid, 0, flag), salt)
        if kind == "c":
            _, key, tid, index, flag = item
            found = self.big_state(key, tid)
            if found is None:
                return None if composer.add_gone(tid) else item
            state, _ = found
            size = self.chunk_bytes_base - len(key)
            count = max(1, -(-len(state) // size))
            while index < count:
                chunk = Chunk.make(tid, index, count, len(state), state[index * size : (index + 1) * size])
                if not composer.add_chunk(key, flag, chunk):
                    return ("c", key, tid, index, flag)
                index += 1
            self._sent(state)
            return None
        if kind == "m":
            return None if composer.add_chunk_want(*item[1:]) else item
        raise AssertionError(f"unknown work item {kind!r}")

    def _sent(self, state: bytes) -> None:
        self.stats.states_sent += 1
        self.stats.state_bytes_sent += len(state)


class AntiEntropyResponder:
    """Answers anti-entropy requests from any number of peers; keeps no per-session state (only a bounded
    `Reassembler` for chunked states in flight and a one-slot cache), so each request is one bounded step."""

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge,
                 config: AntiEntropyConfig | None = None, check: CheckState | None = None,
                 reassembler: Reassembler | None = None) -> None:
        self._replica = _Replica(tree, get_state, merge, config or AntiEntropyConfig(), check, reassembler)

    @property
    def stats(self) -> AntiEntropyStats:
        return self._replica.stats

    def handle(self, request: bytes) -> bytes:
        """Answer one request. Malformed requests get an ERROR reply (and are counted), never an exception."""
        replica = self._replica
        replica.stats.rounds += 1
        replica.stats.bytes_received += len(request)
        try:
            reply = self._answer(request)
        except (AntiEntropyProtocolError, AntiEntropyMergeError) as exc:
            reason = exc.reason if isinstance(exc, AntiEntropyProtocolError) else "state_rejected"
            replica._count_error(reason)
            reply = encode_message(AntiEntropyMessageType.ERROR, {"reason": reason})
        replica.stats.bytes_sent += len(reply)
        return reply

    def _answer(self, request: bytes) -> bytes:
        replica, tree, config = self._replica, self._replica.tree, self._replica.config
        kind, body = decode_message(request, config.max_message_bytes)
        if kind == AntiEntropyMessageType.HELLO:
            hello = _parse_hello(body)
            shape = (tree.fanout, tree.depth, config.hash_bytes, PROTOCOL_VERSION)
            if (hello["f"], hello["D"], hello["w"], hello["v"]) != shape:
                raise AntiEntropyProtocolError("shape_mismatch", f"peer {hello} vs local {shape}")
            if hello["r"] == tree.root():
                return encode_message(AntiEntropyMessageType.IN_SYNC, {})
            work: list[Item] = [("x", 0, 0, False)]
            salt = hello["s"]
            count: int | None = len(tree)
        elif kind == AntiEntropyMessageType.EXCHANGE:
            ex = Exchange.parse(body, tree, config.hash_bytes)
            if ex.salt is None:
                raise AntiEntropyProtocolError("malformed_exchange", "request without a slice offset")
            salt = ex.salt
            work = replica.absorb(ex, salt)
            count = None
        else:
            raise AntiEntropyProtocolError("unexpected_type", f"{kind!r} is not a request")
        composer = Composer(tree, config, salt=None, count=count)
        queue = deque(work)
        replica.fill(composer, queue, salt)
        for item in queue:
            if not composer.add_deferral(item, tree):
                replica.stats.dropped_items += 1
        return composer.encode(AntiEntropyMessageType.EXCHANGE)


class AntiEntropySession:
    """The initiator's side of one push-pull session: `start` -> request, `receive(reply)` -> next request or None.

    Pure: no I/O, no clock; the only randomness is the slice offset drawn from the injected ``rng``.
    """

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge, rng: random.Random,
                 config: AntiEntropyConfig | None = None, check: CheckState | None = None,
                 reassembler: Reassembler | None = None) -> None:
        self._replica = _Replica(tree, get_state, merge, config or AntiEntropyConfig(), check, reassembler)
        config = self._replica.config
        self._salt = rng.randrange(DIGEST_BYTES - config.hash_bytes + 1)
        self._queue: deque[Item] = deque()
        self._started = False
        self.done = False
        self.aborted: BaseException | None = None
        self.incomplete = False
        """True when the session stopped at ``max_rounds`` or dropped work at ``max_pending``: run another soon."""

    @property
    def stats(self) -> AntiEntropyStats:
        return self._replica.stats

    def start(self) -> bytes:
        """The HELLO request."""
        if self._started:
            raise AntiEntropyProtocolError("already_started")
        self._started = True
        tree, config = self._replica.tree, self._replica.config
        body = {"D": tree.depth, "f": tree.fanout, "n": len(tree), "r": tree.root(), "s": self._salt,
                "v": PROTOCOL_VERSION, "w": config.hash_bytes}
        return self._count_sent(encode_message(AntiEntropyMessageType.HELLO, body))

    def receive(self, reply: bytes) -> bytes | None:
        """Digest the responder's reply; return the next request, or None when the session is over."""
        if self.done or not self._started:
            raise AntiEntropyProtocolError("not_running", "session finished, aborted or not started")
        replica = self._replica
        stats = replica.stats
        stats.rounds += 1
        stats.bytes_received += len(reply)
        try:
            kind, body = decode_message(reply, replica.config.max_message_bytes)
            if kind == AntiEntropyMessageType.IN_SYNC:
                return self._finish()
            if kind == AntiEntropyMessageType.ERROR:
                reason = body.get("reason") if isinstance(body, dict) else None
                raise AntiEntropyPeerError(reason if isinstance(reason, str) else "unreadable")
            if kind != AntiEntropyMessageType.EXCHANGE:
                raise AntiEntropyProtocolError("unexpected_type", f"{kind!r} is not a reply")
            ex = Exchange.parse(body, replica.tree, replica.config.hash_bytes)
            if ex.count is not None:
                replica.peer_keys = ex.count
            work = replica.absorb(ex, self._salt)
        except GossipError as exc:
            self.done = True
            self.aborted = exc
            raise
        for item in work:
            if len(self._queue) >= replica.config.max_pending:
                stats.dropped_items += 1
                self.incomplete = True
            else:
                self._queue.append(item)
        if not self._queue:
            return self._finish()
        if stats.rounds >= replica.config.max_rounds:
            self.incomplete = True
            return self._finish()
        composer = Composer(replica.tree, replica.config, salt=self._salt)
        replica.fill(composer, self._queue, self._salt)
        if self._queue and composer.empty:  # the head cannot fit even an empty message (a huge leaf): give up on it
            self._queue.popleft()
            stats.dropped_items += 1
            self.incomplete = True
            replica.fill(composer, self._queue, self._salt)
        if composer.empty:
            return self._finish()
        return self._count_sent(composer.encode(AntiEntropyMessageType.EXCHANGE))

    def _finish(self) -> None:
        self.done = True
        return None

    def _count_sent(self, message: bytes) -> bytes:
        self._replica.stats.bytes_sent += len(message)
        return message


def _parse_hello(body: object) -> dict[str, object]:
    expected = {"D": int, "f": int, "n": int, "r": bytes, "s": int, "v": int, "w": int}
    if not isinstance(body, dict) or set(body) != set(expected):
        raise AntiEntropyProtocolError("malformed_hello", "wrong fields")
    for name, typ in expected.items():
        if type(body[name]) is not typ:
            raise AntiEntropyProtocolError("malformed_hello", f"{name} must be {typ.__name__}")
    if len(body["r"]) != DIGEST_BYTES or not 0 <= body["s"] <= DIGEST_BYTES - body["w"]:
        raise AntiEntropyProtocolError("malformed_hello", "bad root or slice offset")
    return body


def run_session(session: AntiEntropySession, responder: AntiEntropyResponder) -> AntiEntropySession:
    """Drive a session against an in-process responder until it ends (tests, benches, and local catch-up)."""
    request: bytes | None = session.start()
    while request is not None:
        request = session.receive(responder.handle(request))
    return session


__all__ = [
    "PROTOCOL_VERSION",
    "AntiEntropyConfig",
    "AntiEntropyMergeError",
    "AntiEntropyMessageType",
    "AntiEntropyPeerError",
    "AntiEntropyProtocolError",
    "AntiEntropyResponder",
    "AntiEntropySession",
    "AntiEntropyStats",
    "run_session",
]
