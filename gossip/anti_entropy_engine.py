"""The half of anti-entropy both roles share: absorbing a peer's EXCHANGE and composing our own.

`anti_entropy` holds the protocol's design notes, the two roles and the message flow; this module holds what a
message *does*: merge its states (checked first), compare its hash groups and sketches with our tree, diff its leaf
listings, answer its wants, and fill the next message from a queue of work items within the size and work bounds of
`anti_entropy_wire.Composer`. Keeping it apart keeps each file about one concept and under the size budget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gossip.anti_entropy_wire import (
    LISTING_FINGERPRINTS,
    LISTING_SIZES,
    LISTING_TAGS,
    SIZE_HINT_BYTES,
    Composer,
    Exchange,
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


class ExchangeEngine:
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
            if not items:  # the common case of a node catching up: nothing to list
                return None if composer.add_entries(node, b"", 0, LISTING_FINGERPRINTS,
                                                    self.entry_reply_estimate(0)) else item
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


__all__ = [
    "AntiEntropyConfig",
    "AntiEntropyMergeError",
    "AntiEntropyStats",
    "CheckState",
    "ExchangeEngine",
    "GetState",
    "Item",
    "Merge",
]
