"""Per-key digests for anti-entropy, kept current incrementally: mark on change, rehash lazily in bounded batches.

Why lazy: a hot key written 1,000 times between two anti-entropy sessions should be encoded and hashed once, not
1,000 times, and a write must stay O(delta) (encoding a million-element set on every add would not be). So a change
only marks the key dirty (a dict insert); `flush` rehashes at most ``max_keys`` dirty keys per call. Sessions flush
everything dirty (bounded) as they start; the background flush each tick takes only keys dirty for ``settled_s``,
so a key under constant writes is re-encoded once per that period, and the work is spread evenly over ticks
instead of arriving as one stall. The whole keyspace is never re-encoded per exchange: only what changed.

The exception is a state merged *by* anti-entropy: the session needs its new digest at once (to decide whether to
push the merged state back), and the encoding is at hand, so `set_blob` updates the tree immediately.

Each key's encoded size rides along as a hint: CRDT states grow as they learn, so when two replicas' digests of a
key differ, the larger state is very likely the newer, and the session moves it first instead of sending a stale
copy one way and the merged result back (twice the state bytes).

A stale digest is harmless for correctness (the session then just sees a spurious difference, and always sends the
*current* state); it only matters for the vector claims in `sync`, which are made only when nothing is dirty.

Over a disk-backed keyspace (`digest_index_for`) the tree is a `merkle.StoredTree`: each key's digest, size and leaf
are stored beside its state by the checkpointer (`storing` before the write is queued: the checkpointed state is the
current one, so that is also a rehash; `stored` once committed, which lets the tree's overlay go), and each leaf's
hash with them. A start reads the leaf hashes, not the keys, and marks dirty only the keys whose state in memory is
newer than the stored one (recovered from the log), so nothing that grows with the keyspace is replayed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from rumor.gossip.anti_entropy import MerkleTree, state_digest
from rumor.gossip.anti_entropy.merkle import LeafSource, StoredTree
from rumor.server.disk_index import TREE_DEPTH, TREE_FANOUT
from rumor.server.keyspace import Keyspace


class Deferred:
    """What an encoder returns for a key whose blob is not at hand yet (being encoded off the event loop): the key
    stays dirty, behind the others, and is asked for again by a later flush."""


DEFERRED = Deferred()

Encoder = Callable[[str], "bytes | Deferred | None"]
"""key -> the key's anti-entropy blob (type name + encoded state), None if the key does not exist, or `DEFERRED`."""


class DigestIndex:
    """``source``: the stored digests the tree is built on (`StoredTree`); None: a tree in memory."""

    def __init__(self, encode_key: Encoder, fanout: int = TREE_FANOUT, depth: int = TREE_DEPTH,
                 source: LeafSource | None = None, checkpoint_due: Callable[[str], bool] | None = None) -> None:
        self.tree = MerkleTree(fanout, depth) if source is None else StoredTree(source, fanout, depth)
        self._encode_key = encode_key
        #: whether a checkpoint will store the key's current digest (`storing`): the background flush leaves such
        #: keys to it (in `_awaiting`) instead of encoding and hashing them a second time
        self._checkpoint_due = checkpoint_due
        self._awaiting: OrderedDict[str, float] = OrderedDict()
        # key -> `now` of the advance before its first mark (non-decreasing). An OrderedDict, not a dict: `flush`
        # takes keys from the front one by one, and a dict's first item after many deletes from its front is found
        # by walking past every deleted slot (quadratic: 40k dirty keys cost 270 ms a flush of 2000)
        self._dirty: OrderedDict[str, float] = OrderedDict()
        self._now = 0.0
        self.rehashed = 0
        """Keys rehashed so far (tests use it to prove work stays proportional to what changed)."""

    def mark(self, key: str) -> None:
        """The key's state changed: rehash it before the next session (O(1) now). A key already left to a checkpoint
        stays there: the checkpoint stores the key's state as it is then."""
        if key not in self._awaiting:
            self._dirty.setdefault(key, self._now)

    def mark_all(self, keys: Iterable[str]) -> None:
        """E.g. when attaching to a keyspace that already holds data: its digests get built batch by batch."""
        for key in keys:
            self.mark(key)

    def advance(self, now: float) -> None:
        """The driver's clock, once a tick: marks made from now on are dated `now`."""
        self._now = now

    @property
    def dirty(self) -> int:
        """Keys whose digest in the tree may be stale (those left to a checkpoint included)."""
        return len(self._dirty) + len(self._awaiting)

    def flush(self, max_keys: int, *, settled_s: float = 0.0) -> int:
        """Rehash up to ``max_keys`` dirty keys (oldest marks first), only those marked ``settled_s`` or more before
        the last `advance`; returns how many were taken care of.

        A background flush (``settled_s`` > 0) leaves the keys a checkpoint will store to it (`checkpoint_due`):
        the checkpoint encodes and hashes them anyway, and tells the tree (`storing`). A flush before a session
        (``settled_s`` 0) rehashes those too, first: the session needs every digest now."""
        dirty = self._dirty
        cutoff = self._now - settled_s
        taken: list[tuple[str, float]] = []
        if settled_s <= 0:
            while self._awaiting and len(taken) < max_keys:
                taken.append(self._awaiting.popitem(last=False))
        due = self._checkpoint_due if settled_s > 0 else None
        left = 0
        while dirty and len(taken) + left < max_keys:
            key, marked = dirty.popitem(last=False)
            if marked > cutoff:
                dirty[key] = marked
                dirty.move_to_end(key, last=False)
                break
            if due is not None and due(key):
                self._awaiting[key] = marked
                left += 1
            else:
                taken.append((key, marked))
        done = left
        deferred: list[tuple[str, float]] = []
        with self.tree.reading([key.encode("utf-8") for key, _ in taken]):
            for key, marked in taken:
                if self._rehash(key):
                    done += 1
                else:
                    deferred.append((key, marked))
        for key, marked in deferred:
            dirty.setdefault(key, marked)
        return done

    def _rehash(self, key: str) -> bool:
        blob = self._encode_key(key)
        if isinstance(blob, Deferred):
            return False
        name = key.encode("utf-8")
        if blob is None:
            self.tree.remove(name)
        else:
            self.tree.set(name, state_digest(blob), len(blob))
        self.rehashed += 1
        return True

    def set_blob(self, key: str, blob: bytes) -> None:
        """The key's current blob is known (just merged or just encoded): record its digest now."""
        self._dirty.pop(key, None)
        self._awaiting.pop(key, None)
        self.tree.set(key.encode("utf-8"), state_digest(blob), len(blob))
        self.rehashed += 1

    def storing(self, rows: list[tuple[str, bytes, int]]) -> None:
        """The checkpointer is about to queue these keys' current states with their (digest, size)
        (`keyspace.DigestSink`): the tree takes them now (a rehash, and the pin of each key while its stored digest
        changes)."""
        for key, _, _ in rows:
            self._dirty.pop(key, None)
            self._awaiting.pop(key, None)
        self.tree.set_many([(key.encode("utf-8"), digest, size) for key, digest, size in rows])

    def stored(self, rows: list[tuple[str, bytes]]) -> None:
        """(key, digest) committed beside the states: a stored tree's overlay lets go of those it holds."""
        tree = self.tree
        if isinstance(tree, StoredTree):
            for key, digest in rows:
                tree.release(key.encode("utf-8"), digest)


def digest_index_for(keyspace: Keyspace, encode_key: Encoder) -> DigestIndex:
    """The digest index of a keyspace: over its stored digests when it has a disk (attached, so the checkpointer
    tells it of each write), else in memory; either way with every key whose digest it lacks marked."""
    disk = keyspace.disk
    index = DigestIndex(encode_key, source=disk, checkpoint_due=None if disk is None else keyspace.checkpoint_due)
    index.mark_all(keyspace.unsettled_keys())
    if disk is not None:
        keyspace.digest_sink = index
    return index


__all__ = ["DEFERRED", "Deferred", "DigestIndex", "Encoder", "digest_index_for"]
