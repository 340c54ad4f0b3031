"""A key's entry in the keyspace, and the bounded cache of decoded states (issue 14's "memory as a cache").

A state is held in one of two forms, or both:
- its bytes (``blob``, as stored: `crdt.encode`, possibly deflated): what a restart recovers, and what the
  checkpointer wrote last. Bytes cost about 1/20 of the state they encode;
- the decoded state: what reads render and writes and merges change.

A recovered key starts as bytes only and is decoded on first access (`Entry.state`). Listings, anti-entropy digests
and exports read what they need from the bytes (`Entry.encoded`, `Entry.is_empty`) without decoding; those bytes
were checked when they were written, and are checked again (decoded) once a value is read. A key whose stored bytes
turn out unreadable fails with `StorageCorruptError` (503), not the node's start.

Every decoded state is in the `StateCache`, least recently used first, with an estimate of its size. A change drops
the bytes (they no longer match); the checkpointer hands the new ones back (`Entry.stored`) once it has written them.
`StateCache.shrink` (each checkpoint round) drops the decoded form of the least recently used states that have
their bytes, until the estimate is within the budget (`state_cache_bytes`); a state being changed and not yet
checkpointed has no bytes and stays. So decoded memory is bounded by the budget plus the dirty keys, and what is
evicted comes back with one decode when it is next used.

With a disk-backed keyspace (`server.keyspace`, `server.disk_index`) the cache also bounds which *keys* are in
memory at all: an entry whose bytes are durable in the `states` table (``on_disk``) leaves the keyspace when it is
evicted (`StateCache.forget`), and the next use reads it back from disk. An entry read from disk and not decoded is
tracked too, at the cost of its bytes plus `RESIDENT_ENTRY_BYTES`.

Nothing holds a decoded state across an await while it changes it: writes and merges run synchronously on the loop
and eviction runs in the checkpoint round, also on the loop, so a change never lands on an evicted copy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from rumor.crdt import CRDTError, decode, encode
from rumor.crdt.encoding import FLAG_ZLIB, MAGIC, VERSION, as_written, holds_entries
from rumor.server.errors import StorageCorruptError

#: the estimate of a decoded state's memory: a fixed part (its dicts and context) plus a multiple of its encoded size
#: (measured: a small state decodes to about 1.6 KB; a big map or set to 20-30 times its encoding)
DECODED_FIXED_BYTES = 1024
DECODED_BYTES_PER_ENCODED_BYTE = 24
#: the estimate for a state whose size is not known yet (created here, not checkpointed)
UNKNOWN_STATE_BYTES = 2048
DEFLATED_HEADER = bytes((MAGIC, VERSION, FLAG_ZLIB))
#: the estimate of an entry kept as bytes only (its object, its key and the keyspace's slot for it), plus the bytes
RESIDENT_ENTRY_BYTES = 320


class StateCache:
    """Decoded states by key, least recently used first, with their estimated sizes; `shrink` keeps the total within
    ``limit_bytes`` (None: unbounded)."""

    def __init__(self, limit_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self._lru: OrderedDict[str, Entry] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.bytes = 0
        self.evictions = 0
        #: called with a key whose entry is evicted while its bytes are durable on disk (``Entry.on_disk``): the
        #: disk-backed keyspace drops the key from memory altogether. None: evicted entries keep their bytes.
        self.forget: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._lru)

    def used(self, entry: Entry) -> None:
        key = entry.key
        if key in self._sizes:
            self._lru.move_to_end(key)
            return
        self._lru[key] = entry
        size = self._sizes[key] = entry.estimated_bytes()
        self.bytes += size

    def resized(self, entry: Entry) -> None:
        old = self._sizes.get(entry.key)
        if old is not None:
            new = self._sizes[entry.key] = entry.estimated_bytes()
            self.bytes += new - old

    def discard(self, entry: Entry) -> None:
        """Stops tracking ``entry`` (its key left the keyspace)."""
        if self._lru.get(entry.key) is entry:
            self._drop(entry.key)

    def shrink(self, max_evictions: int) -> int:
        """Drops decoded states, least recently used first, until within the budget; skips (and keeps) states that
        have no bytes to come back from. At most ``max_evictions`` states looked at; returns how many were dropped."""
        if self.limit_bytes is None:
            return 0
        dropped = 0
        for _ in range(min(max_evictions, len(self._lru))):
            if self.bytes <= self.limit_bytes:
                break
            key, entry = next(iter(self._lru.items()))
            if entry.on_disk and self.forget is not None:  # durable on disk: the key leaves memory altogether
                entry.evict()
                self._drop(key)
                self.forget(key)
            elif entry.decoded and entry.evict():  # its bytes are at hand: keep them, drop the decoded form
                self._drop(key)
            else:  # changed since its last checkpoint (or that checkpoint not committed yet): it stays until then
                self._lru.move_to_end(key)
                continue
            dropped += 1
        self.evictions += dropped
        return dropped

    def _drop(self, key: str) -> None:
        del self._lru[key]
        self.bytes -= self._sizes.pop(key)


class Entry:
    """A key's type and state (see the module docstring for the two forms a state takes)."""

    __slots__ = ("_blob", "_cache", "_estimate", "_state", "binding", "cached", "key", "on_disk", "type_name")

    def __init__(self, type_name: str, state: Any = None, *, blob: bytes | None = None, key: str = "",
                 cache: StateCache | None = None, on_disk: bool = False) -> None:
        self.type_name = type_name
        #: ``blob`` is what the `states` table holds for the key, committed: the entry may leave memory
        self.on_disk = on_disk
        self.key = key
        self._state = state
        self._blob = blob
        self._estimate = UNKNOWN_STATE_BYTES if blob is None else _estimate(blob)
        self._cache = cache
        #: the rendered read of `state` (a `keyspace.Item`), rebuilt after each change: repeated reads cost nothing,
        #: even of a huge set
        self.cached: Any = None
        #: `values.context_binding` of the key and type, made at the first read of the key (it never changes)
        self.binding = b""
        if state is not None and cache is not None:
            cache.used(self)

    @property
    def state(self) -> Any:
        state = self._state
        if state is None:
            try:
                state = self._state = decode(self._blob)  # type: ignore[arg-type]
            except CRDTError as exc:
                raise self._unreadable(exc) from exc
            if self._cache is not None:
                self._cache.resized(self)  # tracked as bytes until now (read from disk): now as a decoded state
        if self._cache is not None:
            self._cache.used(self)
        return state

    @property
    def decoded(self) -> bool:
        return self._state is not None

    @property
    def blob(self) -> bytes | None:
        """The state's bytes as stored (None: changed since it was last stored)."""
        return self._blob

    def changed(self) -> None:
        """The state changed: its rendered read and its bytes are stale."""
        self.cached = None
        self._blob = None
        self.on_disk = False

    @property
    def unstored(self) -> bool:
        """Changed since its bytes were last stored (or never stored): the next checkpoint of the key writes it."""
        return self._blob is None

    def stored(self, blob: bytes) -> None:
        """The checkpointer wrote ``blob`` for the state as it is now: it may be evicted to those bytes (and, once
        the write has committed, ``on_disk``, leave memory)."""
        self._blob = blob
        self.on_disk = False
        self._estimate = _estimate(blob)
        if self._cache is not None:
            self._cache.resized(self)

    def evict(self) -> bool:
        """Drops the decoded state if its bytes are at hand; False (nothing done) otherwise."""
        if self._blob is None:
            return False
        self._state = None
        self.cached = None
        return True

    def estimated_bytes(self) -> int:
        """Of the decoded state, from its bytes when they were last known (a change rarely moves it much); of the
        bytes alone while the state is not decoded."""
        if self._state is None and self._blob is not None:
            return RESIDENT_ENTRY_BYTES + len(self._blob)
        return self._estimate

    def _unreadable(self, exc: Exception) -> StorageCorruptError:
        return StorageCorruptError(f"the stored state of key {self.key!r} is unreadable: {exc}")

    def encoded(self) -> bytes:
        """`crdt.encode(state)`: from the bytes when they match the state, without decoding or encoding."""
        if self._blob is not None:
            try:
                plain = as_written(self._blob)
            except CRDTError as exc:
                raise self._unreadable(exc) from exc
            if plain is not None:
                return plain
        return encode(self.state)

    def is_empty(self) -> bool:
        if self._state is None:
            try:
                holds = holds_entries(self._blob)  # type: ignore[arg-type]
            except CRDTError as exc:
                raise self._unreadable(exc) from exc
            if holds is not None:
                return not holds
        return bool(self.state.is_empty())

    def replace(self, state: Any) -> None:
        """The key's state is now ``state`` (a join computed off the loop: `Keyspace.adopt_joined`); the caller then
        calls `changed`."""
        self._state = state
        if self._cache is not None:
            self._cache.used(self)


def _estimate(blob: bytes) -> int:
    deflated = blob[:3] == DEFLATED_HEADER  # deflating keeps about a third of a big state's bytes
    return DECODED_FIXED_BYTES + DECODED_BYTES_PER_ENCODED_BYTE * len(blob) * (3 if deflated else 1)
