"""The half of anti-entropy both roles share: absorbing a peer's EXCHANGE and composing our own.

`session` holds the two roles and the message flow; this module holds what a message *does*: merge its states
(checked first), compare its hash groups and sketches with our tree and diff its leaf listings (`descent`), answer
its wants and context rows, and fill the next message from a queue of `work` items within the size and work bounds
of `composer.Composer`.

**Context rows.** For a key both sides hold differently, one side pushes first; a big state pushed whole costs its
size even when the two differ in a few elements. So where the peer reads them (``send_contexts``), a flagged push of
a key whose state is at least ``context_min_bytes`` goes as a context row instead: the application's opaque, small
summary of what this side holds (a CRDT's causal context). The receiver answers it with a diff (what a holder of
that context lacks of its state, unflagged) and its own context row marked as an *answer*; the first side answers
that with a diff only. Both directions then cost the difference, plus one message more than a whole state and its
push-back. An answer row is never answered with a row, so the exchange ends there. A side that does not hold the key
answers with an empty context ("I hold nothing"), which the first side answers with its whole state. Big diffs go in
chunks exactly as big states do.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from rumor.gossip.anti_entropy.chunking import Chunk, ChunkError, Reassembler, SentValues, transfer_id_of
from rumor.gossip.anti_entropy.composer import Composer, reply_content_limit
from rumor.gossip.anti_entropy.config import AntiEntropyConfig
from rumor.gossip.anti_entropy.descent import compare_nodes, diff_leaf, wanted_keys
from rumor.gossip.anti_entropy.merkle import (
    MerkleTree,
    entry_tag,
    key_fingerprint,
    sketch_of,
    sketch_pays_below,
    slice_hash,
    state_digest,
)
from rumor.gossip.anti_entropy.wire import (
    LISTING_FINGERPRINTS,
    LISTING_SIZES,
    LISTING_TAGS,
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_KEY_BYTES,
    SIZE_HINT_BYTES,
    Exchange,
    id_width,
    size_hint,
)
from rumor.gossip.anti_entropy.work import (
    AnswerContext,
    AnswerWant,
    AskChunks,
    AskGroup,
    AskStates,
    DiffListing,
    ExpandNode,
    SendChunks,
    SendDiff,
    SendState,
    WorkItem,
)
from rumor.gossip.errors import GossipError

GetState = Callable[[bytes], "bytes | None"]
"""key -> the key's deterministic state encoding, or None if the key is unknown."""
GetStateSince = Callable[[bytes, bytes], "bytes | None"]
"""``(key, a state of it the peer holds at least) -> what the peer lacks of mine`` (a state that merges like mine)."""
GetContext = Callable[[bytes], "bytes | None"]
"""key -> my context of the key (opaque bytes, small next to a big state), or None if the key is unknown."""
GetStateForContext = Callable[[bytes, bytes], "bytes | None"]
"""``(key, the peer's context of it) -> what a holder of that context lacks of mine`` (merges there like my whole
state), or None if the key is unknown; raises if the context is not valid (the session then fails, nothing
changed by it)."""
Merge = Callable[[bytes, bytes], None]
"""(key, state) -> join the state into the store and update the tree (``tree.set(key, digest, size)``)."""
Prefetch = Callable[[list[bytes]], None]
"""Merges of these keys follow (one message's states): read what they need in one batch (a hint; the point reads
of up to `AntiEntropyConfig.max_states_per_message` cold keys held a step's loop 100 ms and more)."""
CheckState = Callable[[bytes, bytes], None]
"""(key, state) -> raise if the state is not valid; runs on every state of a message before any is merged."""
Install = Callable[[list[tuple[bytes, bytes]]], "list[tuple[bytes, bytes]]"]
"""``rows of (key, state)`` of keys the tree does not hold -> store each state as it is (no merge: the caller
checked it) and set the tree (``tree.set(key, state_digest(state), len(state))``), all or nothing; returns the rows
whose key the store held after all (not stored: the caller merges them)."""


class AntiEntropyMergeError(GossipError, ValueError):
    """The caller's ``check``/``merge`` refused a state received from the peer; the session was aborted."""

    reason = "state_rejected"
    """What a responder answers (an ERROR) and counts."""
    what = "state"

    def __init__(self, key: bytes, cause: BaseException) -> None:
        super().__init__(f"{self.what} for key {key[:32]!r} rejected: {cause}")
        self.key = key
        self.cause = cause


class AntiEntropyContextError(AntiEntropyMergeError):
    """The caller's ``get_state_for_context`` refused a context the peer sent (garbled, or not one it can read);
    the session was aborted, and nothing was made of that context."""

    reason = "context_rejected"
    what = "context"


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
    contexts_sent: int = 0
    """Context rows sent (answers included), each in place of a big state."""
    contexts_received: int = 0
    dropped_items: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    walk_rounds: int = 0
    """Round trips of a bulk walk (`bulk`): not counted against ``max_rounds``, which bounds the descent."""
    states_installed: int = 0
    """States of keys this side did not hold, stored as received by a bulk walk (the rest of states_received were
    merged)."""


FIRST_LISTINGS_AHEAD = 16
"""Leaves a fill reads ahead first (`ExchangeEngine.fill`): a message of listings holds a few hundred, one of
states a few."""
MAX_LISTINGS_AHEAD = 256
"""Leaves read ahead at most in one batch (about 8k rows at 1M keys)."""


def listed_leaf(item: WorkItem, depth: int) -> int | None:
    """The leaf whose listing placing ``item`` reads, if any."""
    if type(item) is DiffListing or type(item) is AnswerWant:
        return item.leaf
    if type(item) is ExpandNode and item.level == depth:
        return item.node
    return None


def leaves_listed_first(queue: deque[WorkItem], depth: int, count: int) -> list[int]:
    """The first ``count`` leaves the items at the front of ``queue`` list (a scan of at most 4x ``count`` items)."""
    leaves: dict[int, None] = {}
    for item in islice(queue, 4 * count):
        leaf = listed_leaf(item, depth)
        if leaf is not None:
            leaves[leaf] = None
            if len(leaves) >= count:
                break
    return list(leaves)


class ExchangeEngine:
    """What both roles share: the tree, the caller's store callbacks, the reassembler and the absorb/compose logic."""

    def __init__(self, tree: MerkleTree, get_state: GetState, merge: Merge, config: AntiEntropyConfig,
                 check: CheckState | None, reassembler: Reassembler | None,
                 get_state_since: GetStateSince | None = None, get_context: GetContext | None = None,
                 get_state_for_context: GetStateForContext | None = None, prefetch: Prefetch | None = None) -> None:
        self.tree = tree
        self.prefetch = prefetch
        self.get_state = get_state
        self.get_state_since = get_state_since
        self.get_context = get_context
        self.get_state_for_context = get_state_for_context
        self.answers_contexts = get_context is not None and get_state_for_context is not None
        """Both context callbacks given: this side can answer context rows (and so may send them)."""
        self.send_contexts = False
        """Set by the role for the message being composed: the peer reads context rows, and so do we."""
        self.merge = merge
        self.check = check
        self.config = config
        self.reassembler = reassembler or Reassembler()
        self.stats = AntiEntropyStats()
        self._sent_values = SentValues()  # big states and diffs being sent in chunks, by transfer id
        # A chunk must fit an otherwise empty reply.
        self.chunk_bytes_base = reply_content_limit(config.max_message_bytes) - 512
        self.peer_keys: int | None = None  # the responder's key count, learnt by the initiator from the first reply
        self._just_received: set[bytes] = set()  # keys of the message being answered: see `absorb`
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
        # Context rows first: an answer row is a few bytes that the peer's diff back waits for, so it must not be
        # the one item a full reply defers.
        work: list[WorkItem] = self._answer_contexts(ex.contexts)
        # Keys whose answer is already on its way: a flagged state (the push-back) or a context row (our diff). Not
        # an unflagged state: a diff of ours it may be, and a want of that key in the same message must be answered.
        self._just_received = {key for key, _, pushback in states if pushback} | {key for key, _, _ in ex.contexts}
        keys = [key for key, _, _ in states]
        if keys and self.prefetch is not None:
            self.prefetch(keys)
        with tree.reading(keys):  # the digests the merges replace, read in one batch too
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
        work.extend(compare_nodes(tree, ex, salt, self.config.hash_bytes, self.sketch_below))
        # Leaf entries and wants are expanded lazily (`fill`): a full reply defers them without doing the work.
        work.extend(DiffListing(leaf, entries, form) for leaf, entries, form in ex.entries)
        work.extend(ExpandNode(level, node, False) for level, node in ex.differs)
        work.extend(AnswerWant(leaf, name) for leaf, name in ex.wants)
        work.extend(AskChunks(key, tid, index, pushback) for key, tid, index, pushback in ex.more)
        work.extend(SendChunks(key, tid, index, pushback) for key, tid, index, pushback in ex.chunk_wants)
        return work

    def _answer_contexts(self, rows: list[tuple[bytes, bytes, bool]]) -> list[WorkItem]:
        """The peer's context rows, each standing for its state of a big key: answer with what that context lacks
        of ours and, unless the row is itself an answer, with our own context (see the module docstring). Without
        the callbacks (a peer should not have sent them), answer as a plain flagged push would be answered."""
        work: list[WorkItem] = []
        seen: set[bytes] = set()
        for key, context, answer in rows:
            if key in seen:
                continue
            seen.add(key)
            self.stats.contexts_received += 1
            if not self.answers_contexts:
                work.append(SendState(key, not answer))
            elif answer:
                work.append(SendDiff(key, context))
            else:  # the row first: it is small, and the peer's diff back depends on it, while ours may be big
                work.extend((AnswerContext(key), SendDiff(key, context)))
        return work

    # -- composing what to send ------------------------------------------------------------------------------

    def big_state(self, key: bytes, tid: bytes) -> bytes | None:
        """The value transfer ``tid`` of ``key`` sends (chunked sends re-ask once a message): kept since its first
        chunk, or else our state if that is still what it sends; None when neither (the transfer is gone)."""
        value = self._sent_values.get(tid, key)
        if value is None:
            value = self.get_state(key)
            if value is None or transfer_id_of(value, key) != tid:
                return None
            self._sent_values.put(tid, key, value)
        return value

    def fill(self, composer: Composer, queue: deque[WorkItem], salt: int) -> None:
        """Place work from the front of ``queue`` until the message is full; what is left stays queued, in order.
        The leaves it lists are read ahead in batches (`MerkleTree.list_ahead`): `FIRST_LISTINGS_AHEAD`, then twice
        as many each time the listings run past those read, so a fill reads at most about twice what it lists.
        Listings stop at ``max_listed_keys`` keys a message (once the message holds something): the rest waits
        for the next round."""
        ahead: dict[int, int] = {}
        tree, listed, budget = self.tree, 0, self.config.max_listed_keys
        depth, most = tree.depth, budget // max(1, len(tree) // tree.leaf_count) + 1  # leaves the budget lists
        batch = min(FIRST_LISTINGS_AHEAD, most)
        try:
            while queue:
                leaf = listed_leaf(queue[0], depth)
                if leaf is not None:
                    if leaf not in ahead:
                        ahead = tree.list_ahead(leaves_listed_first(queue, depth, batch))
                        batch = min(MAX_LISTINGS_AHEAD, most, 2 * batch)
                    listed += ahead[leaf]
                    if listed > budget and not composer.empty:
                        return
                if not self._fill_one(composer, queue, salt):
                    return
        finally:
            if ahead:
                tree.list_ahead(())

    def _fill_one(self, composer: Composer, queue: deque[WorkItem], salt: int) -> bool:
        """Place (or expand) the work item at the front of a non-empty ``queue``: False once the message is full."""
        item = queue[0]
        if type(item) is DiffListing or type(item) is AnswerWant:  # `type() is`: the cheapest test, per item
            if composer.full:
                return False
            queue.popleft()
            if type(item) is DiffListing:
                expanded = diff_leaf(self.tree, item.leaf, item.entries, item.form, salt, self.config.hash_bytes)
            else:
                keys = wanted_keys(self.tree, item.leaf, item.name, salt, self._just_received)
                expanded = [SendState(key, True) for key in keys]
            queue.extendleft(reversed(expanded))
            return True
        left = self.place(composer, item, salt)
        if left is not None:
            queue[0] = left
            return False
        queue.popleft()
        return True

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
            if item.pushback and self.send_contexts and self.tree.size_of(item.key) >= self.config.context_min_bytes:
                placed = self._place_context(composer, item.key, False)
                if placed is not None:
                    return None if placed else item
            get_since = self.get_state_since
            state = self.get_state(item.key) if since is None or get_since is None else get_since(item.key, since)
            if state is None:
                return None
            if composer.add_state(item.key, state, item.pushback):
                self._sent(state)
                return None
            return self._place_big_state(composer, item, item.key, state, item.pushback)
        if isinstance(item, SendDiff):
            return self._place_diff(composer, item)
        if isinstance(item, AnswerContext):
            return None if self._place_context(composer, item.key, True) is not False else item
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

    def _place_big_state(self, composer: Composer, item: WorkItem, key: bytes, state: bytes,
                         pushback: bool) -> WorkItem | None:
        """A state (or diff) that did not fit this message: wait for an emptier one, or go in chunks if none would."""
        if len(state) + len(key) + 64 <= self.chunk_bytes_base:
            return item
        tid = transfer_id_of(state, key)
        self._sent_values.put(tid, key, state)
        return self._place_chunks(composer, SendChunks(key, tid, 0, pushback))

    def _place_context(self, composer: Composer, key: bytes, answer: bool) -> bool | None:
        """Our context row of ``key``: True if placed, False if this message has no room; None (a first row only)
        when a row does not pay (no key any more, or a context about as big as the state or than a row may be), so
        the caller sends the state. An answer is always placed: empty if we hold nothing (the peer then sends its
        whole state), or if our context is too big for a row (the same, which is correct, if not cheap)."""
        context = self.get_context(key) if self.get_context is not None else None
        too_big = context is not None and (len(context) > MAX_CONTEXT_BYTES or len(key) > MAX_CONTEXT_KEY_BYTES
                                           or len(context) + len(key) + 64 > self.chunk_bytes_base)
        if not answer and (context is None or too_big or len(context) >= self.tree.size_of(key)):
            return None
        row = b"" if context is None or too_big else context
        if not composer.add_context(key, row, answer):
            return False
        self.stats.contexts_sent += 1
        return True

    def _place_diff(self, composer: Composer, item: SendDiff) -> WorkItem | None:
        """What the peer's context lacks of our state, unflagged; chunked like a state when big."""
        key, context = item.key, item.context
        if not context or self.get_state_for_context is None:
            state = self.get_state(key)
        else:
            try:
                state = self.get_state_for_context(key, context)
            except Exception as exc:  # the caller's decoder: whatever it raises means "not a valid context"
                raise AntiEntropyContextError(key, exc) from exc
        if state is None:
            return None
        if composer.add_state(key, state, False):
            self._sent(state)
            return None
        return self._place_big_state(composer, item, key, state, False)

    def _place_chunks(self, composer: Composer, item: SendChunks) -> WorkItem | None:
        key, tid, index, pushback = item.key, item.transfer_id, item.next_chunk, item.pushback
        state = self.big_state(key, tid)
        if state is None:
            return None if composer.add_gone(tid) else item
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
        leaf = self.tree.leaf_of(item.key) if isinstance(item, SendState | SendDiff | AnswerContext) else item.leaf
        return composer.add_node_note(self.tree.depth, leaf)

    def _sent(self, state: bytes) -> None:
        self.stats.states_sent += 1
        self.stats.state_bytes_sent += len(state)


__all__ = [
    "AntiEntropyContextError",
    "AntiEntropyMergeError",
    "AntiEntropyStats",
    "CheckState",
    "ExchangeEngine",
    "GetContext",
    "GetState",
    "GetStateForContext",
    "GetStateSince",
    "Install",
    "Merge",
    "Prefetch",
]
