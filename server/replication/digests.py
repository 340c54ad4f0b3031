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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rumor.gossip.anti_entropy import MerkleTree, state_digest

Encoder = Callable[[str], "bytes | None"]
"""key -> the key's anti-entropy blob (type name + encoded state), or None if the key does not exist."""


class DigestIndex:
    def __init__(self, encode_key: Encoder, fanout: int = 8, depth: int = 5) -> None:
        self.tree = MerkleTree(fanout, depth)
        self._encode_key = encode_key
        self._dirty: dict[str, float] = {}  # key -> `now` of the advance before its first mark (non-decreasing)
        self._now = 0.0
        self.rehashed = 0
        """Keys rehashed so far (tests use it to prove work stays proportional to what changed)."""

    def mark(self, key: str) -> None:
        """The key's state changed: rehash it before the next session (O(1) now)."""
        self._dirty.setdefault(key, self._now)

    def mark_all(self, keys: Iterable[str]) -> None:
        """E.g. when attaching to a keyspace that already holds data: its digests get built batch by batch."""
        for key in keys:
            self._dirty.setdefault(key, self._now)

    def advance(self, now: float) -> None:
        """The driver's clock, once a tick: marks made from now on are dated `now`."""
        self._now = now

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def flush(self, max_keys: int, *, settled_s: float = 0.0) -> int:
        """Rehash up to ``max_keys`` dirty keys (oldest marks first), only those marked ``settled_s`` or more before
        the last `advance`; returns how many were done."""
        dirty = self._dirty
        cutoff = self._now - settled_s
        # Taken in one pass, then deleted: `next(iter(dirty))` after deleting from the front rescans every deleted
        # slot, which made rehashing a restarted node's whole keyspace quadratic (most of a serving node's CPU).
        taken: list[str] = []
        for key, marked in dirty.items():
            if len(taken) >= max_keys or marked > cutoff:
                break
            taken.append(key)
        for key in taken:
            del dirty[key]
            self._rehash(key)
        return len(taken)

    def _rehash(self, key: str) -> None:
        blob = self._encode_key(key)
        name = key.encode("utf-8")
        if blob is None:
            self.tree.remove(name)
        else:
            self.tree.set(name, state_digest(blob), len(blob))
        self.rehashed += 1

    def set_blob(self, key: str, blob: bytes) -> None:
        """The key's current blob is known (just merged or just encoded): record its digest now."""
        self._dirty.pop(key, None)
        self.tree.set(key.encode("utf-8"), state_digest(blob), len(blob))
        self.rehashed += 1


__all__ = ["DigestIndex", "Encoder"]
