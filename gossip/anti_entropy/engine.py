"""The half of anti-entropy both roles share: absorbing a peer's EXCHANGE and composing our own.

`session` holds the two roles and the message flow; this module holds what a message *does*: merge its states
(checked first), compare its hash groups and sketches with our tree, diff its leaf listings, answer its wants, and
fill the next message from a queue of `work` items within the size and work bounds of `composer.Composer`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gossip.anti_entropy.chunking import Chunk, ChunkError, Reassembler, transfer_id_of
from gossip.anti_entropy.composer import Composer, reply_content_limit
from gossip.anti_entropy.config import AntiEntropyConfig
from gossip.anti_entropy.merkle import (
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
from gossip.anti_entropy.wire import (
    LISTING_FINGERPRINTS,
    LISTING_SIZES,
    LISTING_TAGS,
    SIZE_HINT_BYTES,
    Exchange,
    entry_width,
    id_width,
    size_hint,
)
from gossip.anti_entropy.work import (
    AnswerWant,
    AskChunks,
    AskGroup,
    AskStates,
    DiffListing,
    ExpandNode,
    SendChunks,
    SendState,
    WorkItem,
)
from gossip.errors import GossipError

GetState = Callable[[bytes], "bytes | None"]
#: ``(key, a state of it the peer holds at least) -> what the peer lacks of mine`` (a state that merges like mine)
GetStateSince = Callable[[bytes, bytes], "bytes | None"]
"""key -> the key's deterministic state encoding, or None if the key is unknown."""
Merge = Callable[[bytes, bytes], None]
"""(key, state) -> join the state into the store and update the tree (``tree.set(key, digest, size)``)."""
CheckState = Callable[[bytes, bytes], None]
"""(key, state) -> raise if the state is not valid; runs on every state of a message before any is merged."""


class AntiEntropyMergeError(GossipError, ValueError):
    """The caller's ``check``/``merge`` refused a state received from the peer; the session was aborted."""

    def __init__(self, key: bytes, cause: BaseException) -> None:
        super().__init__(f"state for key {key[:32]!r} rejected: {cause}")
        self.key = key
        self.cause = cause


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


class ExchangeEngine:
    """What both roles share: the tree, the caller's store callbacks, the reassembler and the absorb/compose logic."""

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge, config: AntiEntropyConfig,
                 check: CheckState | None, reassembler: Reassembler | None,
                 get_state_since: GetStateSince | None = None) -> None:
        self.tree = tree
        self.get_state = get_state
        self.get_state_since = get_state_since
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

    def count_error(self, reason: str) -> None:
        self.stats.errors[reason] = self.stats.errors.get(reason, 0) + 1

    # -- absorbing what the peer sent ------------------------------------------------------------------------

    def absorb(self, ex: Exchange, salt: int) -> list[WorkItem]:
        """Apply a *validated* exchange: merge its states, compare its hashes; return the follow-up work."""
        tree = self.tree
        states: list[tuple[bytes, bytes, bool]] = list(ex.states)
        for key, pushback, chunk in ex.chunks:
            try:
                value = self.reassembler.add(chunk, context=key)
            except ChunkError as exc:
                self.count_error(exc.reason)
                continue
            if value is not None:
                states.append((key, value, pushback))
        if self.check is not None:
            for key, state, _pushback in states:
                try:
                    self.check(key, state)
                except Exception as exc:  # the caller's decoder: whatever it raises means "not a valid state"
                    raise AntiEntropyMergeError(key, exc) from exc
        work: list[WorkItem] = []
        self._just_received = {key for key, _, _ in states}
        for key, state, pushback in states:
            try:
                self.merge(key, state)
            except Exception as exc:
                raise AntiEntropyMergeError(key, exc) from exc
            self.stats.states_received += 1
            self.stats.state_bytes_received += len(state)
            if pushback and tree.get(key) != state_digest(state):
                self.stats.pushbacks += 1
                work.append(SendState(key, False, state if self.get_state_since is not None else None))
        for tid in ex.gone:
            self.reassembler.abandon(tid)
        work.extend(self._compare_nodes(ex, salt))
        # Leaf entries and wants are expanded lazily (`fill`): a full reply defers them without doing the work.
        work.extend(DiffListing(leaf, entries, form) for leaf, entries, form in ex.entries)
        work.extend(ExpandNode(level, node, False) for level, node in ex.differs)
        work.extend(AnswerWant(leaf, name) for leaf, name in ex.wants)
        work.extend(AskChunks(key, tid, index, pushback) for key, tid, index, pushback in ex.more)
        work.extend(SendChunks(key, tid, index, pushback) for key, tid, index, pushback in ex.chunk_wants)
        return work

    def _compare_nodes(self, ex: Exchange, salt: int) -> list[WorkItem]:
        """Compare the peer's groups and sketches with our tree: the differing nodes, each to be expanded.

        Whether we expand a node with a sketch or a full group follows the differing children per differing parent
        seen at its level in this message (`sketch_pays_below`): many means the next level is dense too.
        """
        tree, width, fanout = self.tree, self.config.hash_bytes, self.tree.fanout
        found: list[tuple[int, int]] = []
        failed: list[WorkItem] = []
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
                failed.append(AskGroup(level - 1, parent))
                tally[1] += 2
            elif child >= 0:
                found.append((level, parent * fanout + child))
                tally[1] += 1
        sparse = {level: differing < parents * self.sketch_below for level, (parents, differing) in seen.items()}
        expand: list[WorkItem] = [ExpandNode(level, node, sparse[level]) for level, node in found]
        return expand + failed

    def _wanted_keys(self, leaf: int, name: bytes, salt: int) -> list[bytes]:
        """Keys a want names (by fingerprint or entry tag), less those the same message brought: if ours still
        differs from what they sent, the push-back already carries it."""
        return [k for k, d in self.tree.leaf_items(leaf) if k not in self._just_received and (
            key_fingerprint(k, salt) == name or entry_tag(k, d, salt) == name)]

    def _diff_leaf(self, leaf: int, entries: bytes, form: int, salt: int) -> list[WorkItem]:
        """Compare the peer's listing of a leaf with ours: push what they lack, want what we lack.

        For a key both hold differently, the side whose encoded state is larger (the size hint in the listing) is
        guessed to be newer and pushes first; the other merges and pushes back only if the result still differs.
        """
        if form == LISTING_TAGS:
            return self._diff_tag_listing(leaf, entries, salt)
        width = self.config.hash_bytes
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
        work: list[WorkItem] = []
        wanted: set[bytes] = set()
        for key, digest in self.tree.leaf_items(leaf):
            fp = key_fingerprint(key, salt)
            my_fps.add(fp)
            entry = fp + digest[salt : salt + width]
            if entry in theirs:
                matched.add(entry)
            elif fp not in their_size:
                work.append(SendState(key, False))
            elif 0 < size_hint(self.tree.size_of(key)) < their_size[fp]:
                wanted.add(fp)  # theirs is probably newer: it comes first, ours follows only if still needed
            else:
                work.append(SendState(key, True))  # ours is larger, or nothing tells: push now, saving a round trip
        wanted.update(e[:KEY_HASH_BYTES] for e in theirs - matched if e[:KEY_HASH_BYTES] not in my_fps)
        work.extend(AskStates(leaf, fp) for fp in sorted(wanted))
        return work

    def _diff_tag_listing(self, leaf: int, entries: bytes, salt: int) -> list[WorkItem]:
        """Entry tags cannot pair two versions of a key: push every version they lack (flagged), want every tag we
        lack."""
        step = KEY_HASH_BYTES
        tags = {entries[i : i + step] for i in range(0, len(entries), step)}
        mine: set[bytes] = set()
        work: list[WorkItem] = []
        for key, digest in self.tree.leaf_items(leaf):
            tag = entry_tag(key, digest, salt)
            mine.add(tag)
            if tag not in tags:
                work.append(SendState(key, True))
        work.extend(AskStates(leaf, tag) for tag in sorted(tags - mine))
        return work

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

    def fill(self, composer: Composer, queue: deque[WorkItem], salt: int) -> None:
        """Place work from the front of ``queue`` until the message is full; what is left stays queued, in order."""
        while queue:
            item = queue[0]
            if type(item) is DiffListing or type(item) is AnswerWant:  # `type() is`: the cheapest test, per item
                if composer.full:
                    return
                queue.popleft()
                if type(item) is DiffListing:
                    expanded = self._diff_leaf(item.leaf, item.entries, item.form, salt)
                else:
                    expanded = [SendState(key, True) for key in self._wanted_keys(item.leaf, item.name, salt)]
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

    def place(self, composer: Composer, item: WorkItem, salt: int) -> WorkItem | None:
        """Put one work item into the message; return what is left of it (None when fully placed or moot)."""
        if type(item) is SendState:  # the bulk of a catch-up: kept inline
            since = item.since
            get_since = self.get_state_since
            state = self.get_state(item.key) if since is None or get_since is None else get_since(item.key, since)
            if state is None:
                return None
            if composer.add_state(item.key, state, item.pushback):
                self._sent(state)
                return None
            return self._place_big_state(composer, item, state)
        if type(item) is ExpandNode:
            return None if self._place_node(composer, item, salt) else item
        if isinstance(item, AskStates):
            return None if composer.add_want(item.leaf, item.name) else item
        if isinstance(item, AskGroup):
            return None if composer.add_differs(item.level, item.node) else item
        if isinstance(item, SendChunks):
            return self._place_chunks(composer, item)
        if isinstance(item, AskChunks):
            return None if composer.add_chunk_want(item.key, item.transfer_id, item.next_chunk, item.pushback) else item
        raise AssertionError(f"{item!r} is lazy work: `fill` expands it")

    def _place_node(self, composer: Composer, item: ExpandNode, salt: int) -> bool:
        tree, width, level, node = self.tree, self.config.hash_bytes, item.level, item.node
        if level < tree.depth and item.sketch:
            values = sketch_of(tree.children_ints(level, node))
            return composer.add_sketch(level + 1, node, b"".join(slice_hash(v, salt, width) for v in values))
        if level < tree.depth:
            blob = b"".join(slice_hash(v, salt, width) for v in tree.children_ints(level, node))
            return composer.add_group(level + 1, node, blob)
        items = tree.leaf_items(node)
        if not items:  # the common case of a node catching up: nothing to list
            return composer.add_entries(node, b"", 0, LISTING_FINGERPRINTS, self.entry_reply_estimate(0))
        hints = [size_hint(tree.size_of(k)) for k, _ in items]
        # Entry tags are half the bytes but cannot pair two versions of a key, so the peer wants (5 bytes) each
        # version it lacks, even one it is pushing a newer state of: they pay from two keys a leaf, sizes never.
        form = LISTING_SIZES if any(hints) else LISTING_TAGS if len(items) >= 2 else LISTING_FINGERPRINTS
        if form == LISTING_TAGS:
            listing = b"".join(entry_tag(k, d, salt) for k, d in items)
        else:
            hint_bytes = SIZE_HINT_BYTES if form == LISTING_SIZES else 0
            listing = b"".join(key_fingerprint(k, salt) + d[salt : salt + width] + hint.to_bytes(hint_bytes, "big")
                               for (k, d), hint in zip(items, hints, strict=True))
        return composer.add_entries(node, listing, len(items), form, self.entry_reply_estimate(len(items)))

    def _place_big_state(self, composer: Composer, item: SendState, state: bytes) -> WorkItem | None:
        """A state that did not fit this message: wait for an emptier one, or go in chunks if none would do."""
        key = item.key
        if len(state) + len(key) + 64 <= self.chunk_bytes_base:
            return item
        tid = transfer_id_of(state, key)
        self._cached = (key, state, tid)
        return self._place_chunks(composer, SendChunks(key, tid, 0, item.pushback))

    def _place_chunks(self, composer: Composer, item: SendChunks) -> WorkItem | None:
        key, tid, index, pushback = item.key, item.transfer_id, item.next_chunk, item.pushback
        found = self.big_state(key, tid)
        if found is None:
            return None if composer.add_gone(tid) else item
        state, _ = found
        size = self.chunk_bytes_base - len(key)
        count = max(1, -(-len(state) // size))
        while index < count:
            chunk = Chunk.make(tid, index, count, len(state), state[index * size : (index + 1) * size])
            if not composer.add_chunk(key, pushback, chunk):
                return SendChunks(key, tid, index, pushback)
            index += 1
        self._sent(state)
        return None

    def defer(self, composer: Composer, item: WorkItem) -> bool:
        """Leave a note for work that did not fit, for the peer to ask again (responder side); False if not even
        the note fits. Leaf-derived work becomes one "list that leaf again" note per leaf."""
        if isinstance(item, (ExpandNode, AskGroup)):
            return composer.add_node_note(item.level, item.node)
        if isinstance(item, SendChunks):
            return composer.add_more_chunks(item.key, item.transfer_id, item.next_chunk, item.pushback)
        if isinstance(item, AskChunks):
            return False
        leaf = self.tree.leaf_of(item.key) if isinstance(item, SendState) else item.leaf
        return composer.add_node_note(self.tree.depth, leaf)

    def _sent(self, state: bytes) -> None:
        self.stats.states_sent += 1
        self.stats.state_bytes_sent += len(state)


__all__ = [
    "AntiEntropyMergeError",
    "AntiEntropyStats",
    "CheckState",
    "ExchangeEngine",
    "GetState",
    "GetStateSince",
    "Merge",
]
