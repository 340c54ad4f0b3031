"""A hash tree over a keyspace (key -> 16-byte digest of the key's encoded state), for anti-entropy.

Why this shape:

* **Keys are bucketed by a hash of the key, not by key order** (as Cassandra's and Riak's active anti-entropy do).
  The tree is a complete ``fanout``-ary tree of fixed ``depth``; key ``k`` lives in leaf
  ``blake2b(k) mod fanout**depth``. Every replica therefore builds the *same shape* whatever its keys look like, so
  two trees compare node by node with no negotiation, and a hot key range does not unbalance anything.
* **A node's hash is the XOR of the entry hashes below it**, where an entry hash is ``blake2b(key || digest)``.
  XOR is its own inverse, so changing one key costs ``depth + 1`` integer XORs (remove the old entry hash, add the
  new one on the leaf-to-root path): O(depth) per write, never a rebuild, and the result is independent of the order
  of writes (incremental update equals full rebuild, which the tests check). Entry hashes are 128-bit, keys in a map
  are distinct, so an accidental cancellation has probability ~2**-128; this is not an adversarial setting (the
  keyring authenticates peers), which is what makes the cheap combiner acceptable.
* **Defaults ``fanout=8, depth=5``** (32,768 leaves, ~3 keys a leaf at 100k keys) follow from the byte model in the
  `gossip.anti_entropy` package docstring: a small fanout keeps the cost of locating ``d`` differences near
  ``d * fanout * 3 bytes`` per level, and the session descends two levels per round trip to keep round trips down.
  Where differences are sparse the session sends a `sketch_of` a node's children instead, ``(1 + log2 fanout) * 3``
  bytes that name a single differing child, which XOR's linearity makes possible.

Digests are computed by the caller with `state_digest` over the deterministic encoding of a state, so equal states
have equal digests on every replica. A leaf holds a plain dict (a few keys each; sorted only when listed):
32k `SortedDict`s cost 3x more to build than the whole tree otherwise does.

`StoredTree` is the same tree when the per-key digests live on disk (a `LeafSource`: a database with each key's
digest, size and leaf, and each leaf's XOR kept with them): it holds in memory only the node hashes and an
*overlay* of the keys whose digest in the tree is not the stored one (set since, or pinned while a write of the
stored one is under way), so its memory does not grow with the keyspace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from hashlib import blake2b
from typing import Protocol

from rumor.gossip.errors import ConfigError

DIGEST_BYTES = 16
"""Width of a state digest and of a full node hash."""

KEY_HASHES_KEPT = 8192
"""Key hashes kept (`key_hash`): a few bulk replies' keys, about 1 MB."""

KEY_HASH_BYTES = 3
"""Width of the key fingerprint used to name a key inside one leaf on the wire.

Three bytes: a leaf holds a few keys, so two of them share a fingerprint with probability ~keys**2 / 2**25 per
listing, the same scale as a 3-byte digest slice passing for equal; both only leave a key for a later session."""

MAX_LEAVES = 1 << 20
"""Upper bound on ``fanout ** depth``: the tree is preallocated, so its size must stay modest."""


def state_digest(state: bytes) -> bytes:
    """The 16-byte digest of one key's encoded state: what the tree stores and what peers compare."""
    return blake2b(state, digest_size=DIGEST_BYTES).digest()


@lru_cache(maxsize=KEY_HASHES_KEPT)
def key_hash(key: bytes) -> bytes:
    """16 bytes derived from the key alone: bytes 0..7 choose the leaf, bytes 8..15 hold the wire fingerprint.
    The latest are kept: a key stored by a bulk install had its leaf asked six times on the way (when its reply
    is checked, settled, written, committed), each a new hash."""
    return blake2b(key, digest_size=16, person=b"rumor-merkle-key").digest()


def key_fingerprint(key: bytes, salt: int = 0) -> bytes:
    """The short name of a key within its leaf, taken at a per-session offset of the key hash.

    Two keys of one leaf may share a fingerprint in one session (the anti-entropy session then repairs one of them
    and leaves the other for later); rotating the offset with ``salt`` makes such a collision transient.
    """
    offset = 8 + salt % (8 - KEY_HASH_BYTES + 1)
    return key_hash(key)[offset : offset + KEY_HASH_BYTES]


def entry_hash(key: bytes, digest: bytes) -> int:
    """What one key contributes to its leaf's hash (and every node above): XORed in, XORed out."""
    # digest has a fixed width, so key || digest is unambiguous.
    return int.from_bytes(blake2b(key + digest, digest_size=16, person=b"rumor-merkle-ent").digest(), "big")


_entry_hash = entry_hash


@lru_cache(maxsize=KEY_HASHES_KEPT)
def leaf_of(key: bytes, leaf_count: int) -> int:
    """The leaf bucket of ``key`` in a tree of ``leaf_count`` leaves (`MerkleTree.leaf_of`). The latest are kept,
    as the key hashes are: a key a bulk install stores is placed five or six times on its way (0.2 µs a time kept,
    0.7 µs worked out again)."""
    return int.from_bytes(key_hash(key)[:8], "big") % leaf_count


def entry_tag(key: bytes, digest: bytes, salt: int = 0) -> bytes:
    """``KEY_HASH_BYTES`` of the entry hash of ``(key, digest)`` at a per-session offset: names one version of one key.

    A leaf listing of these tells the peer which of its versions we lack, without key fingerprints: it costs half
    as much, but cannot pair two versions of one key (size hints need the fingerprint form).
    """
    offset = salt % (DIGEST_BYTES - KEY_HASH_BYTES + 1)
    return slice_hash(_entry_hash(key, digest), offset, KEY_HASH_BYTES)


class MerkleTree:
    """Fixed-shape hash tree over ``key -> digest``; see the module docstring for why it looks like this.

    Levels are numbered from the root (level 0, one node) to the leaves (level ``depth``, ``fanout**depth`` nodes).
    Node ``i`` at level ``L`` has children ``i*fanout .. i*fanout+fanout-1`` at level ``L+1``.
    """

    __slots__ = ("_count", "_depth", "_fanout", "_leaf_count", "_leaves", "_levels", "_sizes")

    def __init__(self, fanout: int = 8, depth: int = 5) -> None:
        if not 2 <= fanout <= 256:
            raise ConfigError("fanout", fanout, "must be in 2..256")
        if depth < 1:
            raise ConfigError("depth", depth, "must be >= 1")
        if fanout**depth > MAX_LEAVES:
            raise ConfigError("depth", depth, f"fanout**depth must be <= {MAX_LEAVES}")
        self._fanout = fanout
        self._depth = depth
        self._leaf_count: int = fanout**depth
        self._levels: list[list[int]] = [[0] * (fanout**level) for level in range(depth + 1)]
        self._leaves: dict[int, dict[bytes, bytes]] = {}
        self._sizes: dict[bytes, int] = {}  # encoded state sizes, when the caller gives them (a hint, not hashed)
        self._count = 0

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, bytes] | tuple[bytes, bytes, int]], fanout: int = 8,
                   depth: int = 5) -> MerkleTree:
        """Build a tree in one pass: leaves first, then each level from the one below (cheaper than N `set` calls).

        Items are ``(key, digest)`` or ``(key, digest, encoded_size)``.
        """
        tree = cls(fanout, depth)
        leaf_level = tree._levels[depth]
        for key, digest, *size in items:
            if size and size[0]:
                tree._sizes[key] = size[0]
            tree._check_digest(digest)
            leaf = tree.leaf_of(key)
            bucket = tree._leaves.get(leaf)
            if bucket is None:
                bucket = tree._leaves[leaf] = {}
            old = bucket.get(key)
            if old is not None:
                leaf_level[leaf] ^= _entry_hash(key, old)
            else:
                tree._count += 1
            bucket[key] = digest
            leaf_level[leaf] ^= _entry_hash(key, digest)
        tree._fill_upper_levels()
        return tree

    def _fill_upper_levels(self) -> None:
        """Every level above the leaves, from the leaves' hashes."""
        fanout = self._fanout
        for level in range(self._depth - 1, -1, -1):
            below = self._levels[level + 1]
            here = self._levels[level]
            for i in range(len(here)):
                acc = 0
                for child in below[i * fanout : (i + 1) * fanout]:
                    acc ^= child
                here[i] = acc

    # -- shape -------------------------------------------------------------------------------------------------

    @property
    def fanout(self) -> int:
        return self._fanout

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def leaf_count(self) -> int:
        return self._leaf_count

    def level_size(self, level: int) -> int:
        """Number of nodes at ``level`` (``fanout ** level``)."""
        return len(self._levels[level])

    def leaf_of(self, key: bytes) -> int:
        """The leaf bucket that holds ``key``; the same on every replica with the same shape."""
        return leaf_of(key, self._leaf_count)

    def reading(self, keys: list[bytes]) -> AbstractContextManager[None]:
        """Within the block, lookups of ``keys`` are served from one batch read (a `StoredTree` over disk); a tree in
        memory has nothing to read ahead."""
        return nullcontext()

    # -- mutation ----------------------------------------------------------------------------------------------

    def set(self, key: bytes, digest: bytes, size: int = 0) -> None:
        """Insert or update one key in O(depth); call it on every local write and every merge.

        ``size`` (the encoded state's length, 0 = unknown) is a hint anti-entropy uses to guess, for a key that
        differs on both sides, which side's state is newer: join-semilattice states tend to grow.
        """
        self._check_digest(digest)
        if size:
            self._sizes[key] = size
        else:
            self._sizes.pop(key, None)
        leaf = self.leaf_of(key)
        bucket = self._leaves.get(leaf)
        if bucket is None:
            bucket = self._leaves[leaf] = {}
        old = bucket.get(key)
        if old == digest:
            return
        delta = _entry_hash(key, digest)
        if old is None:
            self._count += 1
        else:
            delta ^= _entry_hash(key, old)
        bucket[key] = digest
        self._apply(leaf, delta)

    def set_many(self, items: list[tuple[bytes, bytes, int]]) -> None:
        """`set` of each (key, digest, size), in order."""
        for key, digest, size in items:
            self.set(key, digest, size)

    def remove(self, key: bytes) -> bool:
        """Forget a key (e.g. after garbage collection); returns whether it was present."""
        leaf = self.leaf_of(key)
        bucket = self._leaves.get(leaf)
        if bucket is None or key not in bucket:
            return False
        old = bucket.pop(key)
        self._sizes.pop(key, None)
        if not bucket:
            del self._leaves[leaf]
        self._count -= 1
        self._apply(leaf, _entry_hash(key, old))
        return True

    def _apply(self, leaf: int, delta: int) -> None:
        index = leaf
        for level in range(self._depth, -1, -1):
            self._levels[level][index] ^= delta
            index //= self._fanout

    def _check_digest(self, digest: bytes) -> None:
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"digest must be {DIGEST_BYTES} bytes, got {len(digest)}")

    # -- reading -----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        bucket = self._leaves.get(self.leaf_of(key))
        return bucket is not None and key in bucket

    def get(self, key: bytes) -> bytes | None:
        """The digest stored for ``key``, or None."""
        bucket = self._leaves.get(self.leaf_of(key))
        return None if bucket is None else bucket.get(key)

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """`get` of many keys at once: the digest of each one the tree holds."""
        found: dict[bytes, bytes] = {}
        for key in keys:
            digest = self.get(key)
            if digest is not None:
                found[key] = digest
        return found

    def size_of(self, key: bytes) -> int:
        """The encoded size hint given for ``key`` (0 when unknown)."""
        return self._sizes.get(key, 0)

    def root(self) -> bytes:
        """The full 16-byte root hash: equal roots mean equal keyspaces (up to ~2**-128)."""
        return self._levels[0][0].to_bytes(DIGEST_BYTES, "big")

    def node(self, level: int, index: int) -> bytes:
        """The full 16-byte hash of one node."""
        return self._levels[level][index].to_bytes(DIGEST_BYTES, "big")

    def node_int(self, level: int, index: int) -> int:
        """The hash of one node as a 128-bit integer (cheap to slice for the wire)."""
        return self._levels[level][index]

    def children_ints(self, level: int, index: int) -> list[int]:
        """Hashes of the ``fanout`` children (at ``level + 1``) of node ``index`` at ``level``."""
        start = index * self._fanout
        return self._levels[level + 1][start : start + self._fanout]

    def leaf_items(self, leaf: int) -> list[tuple[bytes, bytes]]:
        """The ``(key, digest)`` pairs in one leaf, in key order."""
        bucket = self._leaves.get(leaf)
        return [] if bucket is None else sorted(bucket.items())

    def leaves_items(self, leaves: list[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """`leaf_items` of each of ``leaves`` (a `StoredTree` reads them in one batch)."""
        return {leaf: self.leaf_items(leaf) for leaf in leaves}

    def list_ahead(self, leaves: Iterable[int]) -> dict[int, int]:
        """``leaves`` are about to be listed one by one (`leaf_items`): a `StoredTree` reads their rows in one batch
        and answers those listings from it until the next call (``()``: let go). A tree in memory has nothing to
        read. Returns how many keys each leaf holds (what listing it costs)."""
        return {leaf: len(self._leaves.get(leaf, ())) for leaf in leaves}

    def leaves_states(self, leaves: list[int], up_to: int) -> \
            tuple[dict[int, list[tuple[bytes, bytes]]], dict[bytes, bytes]]:
        """`leaves_items`, and the states (of at most ``up_to`` bytes) read with them: a tree in memory reads none."""
        return self.leaves_items(leaves), {}

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, digest)``, leaf by leaf (the order is deterministic for a given key set)."""
        for leaf in sorted(self._leaves):
            yield from sorted(self._leaves[leaf].items())

    def node_table(self) -> list[list[int]]:
        """A copy of every level's hashes, for tests that compare trees structurally."""
        return [list(level) for level in self._levels]


class LeafSource(Protocol):
    """Per-key digests kept on disk, as a `StoredTree` reads them. A key's stored digest changes only by a write
    the tree was told of first (`StoredTree.set` before the write is queued, `StoredTree.release` once committed),
    and each leaf's stored hash (the XOR of its keys' `entry_hash`) changes with them, in the same transaction."""

    def leaf_hashes(self, leaf_count: int) -> tuple[list[int], int]:
        """Every leaf's stored hash (``leaf_count`` of them) and how many keys have a stored digest."""

    def digest_row(self, key: bytes) -> tuple[bytes, int] | None:
        """(digest, encoded size) stored for ``key``, or None."""

    def digest_rows(self, keys: list[bytes]) -> dict[bytes, tuple[bytes, int]]:
        """`digest_row` of many keys at once: those stored with a digest."""

    def rows_of(self, keys: list[bytes]) -> AbstractContextManager[None]:
        """Within the block, lookups of the rows of ``keys`` (`digest_rows`, and the application's own) may be
        answered from one read made as it opens: what `StoredTree.reading` opens."""

    def leaves_rows(self, leaves: list[int],
                    states_up_to: int = 0) -> list[tuple[int, bytes, bytes, int, bytes | None]]:
        """(leaf, key, digest, encoded size, state) of every key stored with a digest in any of ``leaves``; the
        state (what anti-entropy sends of the key, the bytes the digest hashes) only for sizes of at most
        ``states_up_to``, else None."""


class StoredTree(MerkleTree):
    """A `MerkleTree` whose per-key digests are on disk (see the module docstring): memory holds the node hashes
    (``fanout**depth`` leaves x 16 bytes and the levels above) and the overlay, nothing per stored key."""

    __slots__ = ("_leaf_sizes", "_listed_ahead", "_overlaid", "_overlay", "_read_ahead", "_source")

    def __init__(self, source: LeafSource, fanout: int = 8, depth: int = 5) -> None:
        super().__init__(fanout, depth)
        self._source = source
        leaves, self._count = source.leaf_hashes(self._leaf_count)
        self._levels[depth] = list(leaves)
        self._fill_upper_levels()
        #: leaf -> key -> (digest, size) in the tree, or None for a key absent from the tree but stored
        self._overlay: dict[int, dict[bytes, tuple[bytes, int] | None]] = {}
        self._overlaid = 0
        #: sizes of the keys of the leaves listed last: a session asks `size_of` for each key of the leaves it just
        #: listed (a write to one of those leaves forgets them)
        self._leaf_sizes: tuple[frozenset[int], dict[bytes, int]] = (frozenset(), {})
        #: stored rows read in one batch for the keys of a `reading` block (None outside one)
        self._read_ahead: dict[bytes, tuple[bytes, int] | None] | None = None
        #: leaf -> its stored (key, digest, size) rows, read in one batch for the listings a session is about to
        #: make (`list_ahead`); a leaf whose stored rows change (`release`) is dropped
        self._listed_ahead: dict[int, list[tuple[bytes, bytes, int]]] = {}

    @property
    def overlaid(self) -> int:
        """Keys whose digest in the tree is not the stored one (what memory holds per key)."""
        return self._overlaid

    def _current(self, key: bytes, leaf: int) -> tuple[bytes, int] | None:
        bucket = self._overlay.get(leaf)
        if bucket is not None and key in bucket:
            return bucket[key]
        return None if self._empty_leaf(leaf) else self._stored(key)

    def _empty_leaf(self, leaf: int) -> bool:
        """Whether the tree holds no key in ``leaf`` (its hash is 0: the XOR of one or more entry hashes is 0 with
        odds of 2**-128, the odds every equal-hash comparison of the tree takes). Then no key of it outside the
        overlay is stored either, so there is nothing to read: a node catching up installs into empty leaves."""
        return not self._levels[self._depth][leaf]

    def _maybe_stored(self, keys: list[bytes]) -> list[bytes]:
        """Those of ``keys`` not in the overlay whose stored row may exist (in a leaf that is not empty)."""
        overlay, leaf_of, empty = self._overlay, self.leaf_of, self._empty_leaf
        out = []
        for key in keys:
            leaf = leaf_of(key)
            if key not in overlay.get(leaf, ()) and not empty(leaf):
                out.append(key)
        return out

    def _stored(self, key: bytes) -> tuple[bytes, int] | None:
        ahead = self._read_ahead
        if ahead is not None and key in ahead:
            return ahead[key]
        return self._source.digest_row(key)

    @contextmanager
    def reading(self, keys: list[bytes]) -> Iterator[None]:
        """The stored rows of ``keys`` not in the overlay, read in one batch for the block (a flush of hundreds of
        dirty keys asks each one's stored digest and size: a point read each otherwise), in the source's `rows_of`
        block (so other reads of those rows in it read nothing). Writes within the block go to the overlay, which is
        asked first, so the rows read ahead never hide them."""
        with self._source.rows_of(keys):
            unpinned = self._maybe_stored(keys)
            found = self._source.digest_rows(unpinned) if unpinned else {}
            ahead: dict[bytes, tuple[bytes, int] | None] = dict.fromkeys(keys)  # asked only outside the overlay
            ahead.update(found)
            outer, self._read_ahead = self._read_ahead, ahead
            try:
                yield
            finally:
                self._read_ahead = outer

    def _put(self, key: bytes, leaf: int, value: tuple[bytes, int] | None) -> None:
        bucket = self._overlay.get(leaf)
        if bucket is None:
            bucket = self._overlay[leaf] = {}
        if key not in bucket:
            self._overlaid += 1
        bucket[key] = value
        if leaf in self._leaf_sizes[0]:
            self._leaf_sizes = (frozenset(), {})

    def set(self, key: bytes, digest: bytes, size: int = 0) -> None:
        self._set(key, digest, size, self.leaf_of(key), None)

    def set_many(self, items: list[tuple[bytes, bytes, int]]) -> None:
        """`set` of each (key, digest, size), in order, reading the stored digests they replace in one batch."""
        leaves = [self.leaf_of(key) for key, _, _ in items]
        unpinned = self._maybe_stored([key for key, _, _ in items])
        stored = self._source.digest_rows(unpinned) if unpinned else {}
        for (key, digest, size), leaf in zip(items, leaves, strict=True):
            self._set(key, digest, size, leaf, stored)

    def _set(self, key: bytes, digest: bytes, size: int, leaf: int,
             stored: dict[bytes, tuple[bytes, int]] | None) -> None:
        self._check_digest(digest)
        bucket = self._overlay.get(leaf)
        if bucket is not None and key in bucket:
            old = bucket[key]
        else:
            old = None if self._empty_leaf(leaf) else self._stored(key) if stored is None else stored.get(key)
        self._put(key, leaf, (digest, size))
        if old is not None and old[0] == digest:
            return
        delta = _entry_hash(key, digest)
        if old is None:
            self._count += 1
        else:
            delta ^= _entry_hash(key, old[0])
        self._apply(leaf, delta)

    def remove(self, key: bytes) -> bool:
        leaf = self.leaf_of(key)
        old = self._current(key, leaf)
        if old is None:
            return False
        self._put(key, leaf, None)
        self._count -= 1
        self._apply(leaf, _entry_hash(key, old[0]))
        return True

    def release(self, key: bytes, digest: bytes) -> None:
        """``digest`` is now stored for ``key`` (committed): if the tree holds that digest, the overlay lets go."""
        leaf = self.leaf_of(key)
        bucket = self._overlay.get(leaf)
        if bucket is None:
            return
        held = bucket.get(key)
        if held is not None and held[0] == digest:
            self._listed_ahead.pop(leaf, None)  # its stored rows changed
            del bucket[key]
            self._overlaid -= 1
            if not bucket:
                del self._overlay[leaf]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._current(key, self.leaf_of(key)) is not None

    def get(self, key: bytes) -> bytes | None:
        held = self._current(key, self.leaf_of(key))
        return None if held is None else held[0]

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """Keys in the overlay from it, the rest in one batch from the source (a bulk reply's hundreds of keys cost
        a few statements, not a point read each)."""
        found: dict[bytes, bytes] = {}
        unpinned: list[bytes] = []
        overlay, empty = self._overlay, self._empty_leaf
        for key in keys:
            leaf = self.leaf_of(key)
            bucket = overlay.get(leaf)
            if bucket is not None and key in bucket:
                held = bucket[key]
                if held is not None:
                    found[key] = held[0]
            elif not empty(leaf):
                unpinned.append(key)
        if unpinned:
            for key, (digest, _size) in self._source.digest_rows(unpinned).items():
                found[key] = digest
        return found

    def size_of(self, key: bytes) -> int:
        listed = self._leaf_sizes[1].get(key)  # a write to any leaf listed forgets them all: what is here holds
        if listed is not None:
            return listed
        held = self._current(key, self.leaf_of(key))
        return 0 if held is None else held[1]

    def leaf_items(self, leaf: int) -> list[tuple[bytes, bytes]]:
        return self.leaves_items([leaf])[leaf]

    def leaves_items(self, leaves: list[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        return self.leaves_states(leaves, 0)[0]

    def list_ahead(self, leaves: Iterable[int]) -> dict[int, int]:
        """One read for the stored rows of every one of ``leaves`` that holds a key (a descent step lists hundreds
        of leaves, and a statement a leaf cost 0.3 ms each at 1M keys: steps of 100-450 ms under a write load)."""
        listed: dict[int, list[tuple[bytes, bytes, int]]] = {leaf: [] for leaf in leaves}
        held = [leaf for leaf in listed if not self._empty_leaf(leaf)]
        for leaf, key, digest, size, _ in self._source.leaves_rows(held) if held else ():
            listed[leaf].append((key, digest, size))
        self._listed_ahead = listed
        return {leaf: len(rows) + len(self._overlay.get(leaf, ())) for leaf, rows in listed.items()}

    def leaves_states(self, leaves: list[int], up_to: int) -> \
            tuple[dict[int, list[tuple[bytes, bytes]]], dict[bytes, bytes]]:
        """The stored states of size at most ``up_to`` come with the listing, in the same read (a bulk walk's
        reply): a key outside the overlay is in the tree with its stored digest, so its stored state is the one
        the tree's hashes stand for. Keys in the overlay are left to the caller's reads (their state is newer).
        Listings alone of leaves read ahead (`list_ahead`) read nothing."""
        by_leaf: dict[int, dict[bytes, tuple[bytes, int]]] = {leaf: {} for leaf in leaves}
        states: dict[bytes, bytes] = {}
        ahead = self._listed_ahead
        if not up_to and all(leaf in ahead for leaf in leaves):
            for leaf in leaves:
                by_leaf[leaf].update((key, (digest, size)) for key, digest, size in ahead[leaf])
        else:
            for leaf, key, digest, size, state in self._source.leaves_rows(leaves, up_to) if leaves else ():
                by_leaf[leaf][key] = (digest, size)
                if state is not None:
                    states[key] = state
        sizes: dict[bytes, int] = {}
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for leaf, held_here in by_leaf.items():
            for key, held in self._overlay.get(leaf, {}).items():
                states.pop(key, None)
                if held is None:
                    held_here.pop(key, None)
                else:
                    held_here[key] = held
            sizes.update((key, size) for key, (_, size) in held_here.items())
            out[leaf] = sorted((key, digest) for key, (digest, _) in held_here.items())
        self._leaf_sizes = (frozenset(leaves), sizes)
        return out, states

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, digest)``, leaf by leaf (reads every leaf from disk: for tests and tools)."""
        for leaf in range(self._leaf_count):
            yield from self.leaf_items(leaf)


def sketch_size(fanout: int) -> int:
    """Values in a children sketch: the XOR of all children, then one per bit of the child index."""
    return 1 + (fanout - 1).bit_length()


def sketch_of(children: list[int]) -> list[int]:
    """A sketch of a node's children that locates a *single* differing child in ``sketch_size`` values.

    Value 0 is the XOR of every child (the node's own hash); value ``k >= 1`` the XOR of the children whose index has
    bit ``k - 1`` set. XOR is linear, so XORing two replicas' sketches cancels the equal children: if exactly one
    child ``j`` differs, by ``delta``, value 0 differs by ``delta`` and value ``k`` by ``delta`` or 0 as bit ``k - 1``
    of ``j`` is 1 or 0, which spells ``j`` (`locate_child`). Slices of a sketch are sketches of the slices.
    """
    out = [0] * sketch_size(len(children))
    for index, value in enumerate(children):
        out[0] ^= value
        k = 1
        while index:
            if index & 1:
                out[k] ^= value
            index >>= 1
            k += 1
    return out


def locate_child(deltas: list[int], fanout: int) -> int | None:
    """From the XOR of two sketches: the one differing child, -1 if none differs, None if several do.

    Two differing children are always told apart from one (they differ in some index bit, which makes that value's
    delta neither 0 nor the total) unless their deltas cancel; three or more pass for one only by a coincidence of
    slices (~2**-24 at 3 bytes). Either leaves a difference for a later session, like any slice collision.
    """
    total = deltas[0]
    if total == 0:
        return -1
    child = 0
    for k, delta in enumerate(deltas[1:]):
        if delta == total:
            child |= 1 << k
        elif delta != 0:
            return None
    return child if child < fanout else None


def sketch_pays_below(fanout: int, width: int, id_bytes: int) -> float:
    """The differing children per differing parent, seen at a level, below which its nodes are best sketched.

    A sketch costs ``sketch_size * width`` bytes; when several children differ, the full ``fanout * width`` group
    follows anyway. With Poisson(mu) differences under each node, a sketch pays while P(>= 2 | >= 1) stays under
    (group - sketch) / group; this returns the ratio a level with that mu shows one level up, where it is measured.
    """
    group, sketch = fanout * width + id_bytes, sketch_size(fanout) * width + id_bytes
    if sketch >= group:
        return 0.0
    bound = (group - sketch) / group
    low, high = 1e-6, 50.0
    for _ in range(60):  # bisection on mu: P(>= 2 | >= 1) grows with mu
        mu = (low + high) / 2
        multi = (1 - math.exp(-mu) * (1 + mu)) / (1 - math.exp(-mu))
        low, high = (mu, high) if multi < bound else (low, mu)
    return fanout * (1 - math.exp(-low)) / (1 - math.exp(-fanout * low))


def slice_hash(value: int, offset: int, width: int) -> bytes:
    """``width`` bytes of a 128-bit node hash starting at byte ``offset`` (the session picks the offset)."""
    shift = 8 * (DIGEST_BYTES - offset - width)
    return ((value >> shift) & ((1 << (8 * width)) - 1)).to_bytes(width, "big")


__all__ = [
    "DIGEST_BYTES",
    "KEY_HASH_BYTES",
    "MAX_LEAVES",
    "LeafSource",
    "MerkleTree",
    "StoredTree",
    "entry_hash",
    "entry_tag",
    "key_fingerprint",
    "key_hash",
    "leaf_of",
    "locate_child",
    "sketch_of",
    "sketch_pays_below",
    "sketch_size",
    "slice_hash",
    "state_digest",
]
