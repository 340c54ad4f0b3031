"""The keyspace: key -> (API type name, CRDT state), ordered by key, with change listeners.

In memory, or backed by the `states` table on disk (``disk``: a `server.disk_index.StateReader`). Backed by disk,
memory holds only the keys in use: decoded states within the cache's budget (`server.state_cache`), keys changed
since their last committed checkpoint, and keys whose checkpoint has not committed yet. Every other key is on disk
only and read on demand (a point read by primary key); listings and exports merge a range scan of the table with the
keys in memory (memory's view of a key wins: it is newer); the key count is kept, not counted. So the number of keys
is bounded by the disk, not by RAM.

What it offers the rest of the node:
- `apply_local(key, update) -> LocalUpdate(item, delta, blob)`: a local update. The delta is encoded once, here,
  before the state changes (a delta that cannot encode changes nothing), and the same bytes serve the durable log
  and every listener.
- `merge_remote(key, type_name, state_or_delta)`: a delta or full state from another node; its key is checked like a
  client's. Merge is idempotent, so duplicates and re-deliveries are harmless.
- `load(key, type_name, state)`: recovery from storage, telling no listener.
- `item(key)`: the read (value in its JSON shape plus read context), rendered once per change of the key and cached.
- `entry(key)`: the raw entry (type name, state): what replication reads states through.
- `page(prefix, after, limit)`: a listing in key order; `encoded_state(key)`: a state's canonical bytes.
- `keys_after(after, limit)`: every key in order, emptied ones too; `stored_after(after, limit)`: the same with each
  key's type and encoded state (what an export pages through).
- `install_stored(rows)`: raw (key, type, stored bytes) rows for keys unknown here (a bulk catch-up), kept as bytes
  until the caller has stored them; `persisted(rows)`: those bytes are committed, the keys may leave memory.
- `join_local(key, type_name, delta, blob)`: joins a delta made here without an `Update` (an import) and tells the
  local listeners, so it spreads like a local write.
- `subscribe(callback, remote=False)`: `callback(key, type_name, delta, blob)` after every local update, with the
  delta's encoding; with ``remote=True`` after every remote merge too, with ``blob`` None.

Durability is not done here: `server.node.Node` wraps these calls with the storage log.
A key keeps its type and state after a delete (the state's causal context is what lets a concurrent update on another
node survive the delete); an empty value simply reads as absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from heapq import merge
from itertools import islice
from typing import Any, NamedTuple, Protocol

from sortedcontainers import SortedDict

from rumor.crdt import CRDTError, encode
from rumor.server.disk_index import StateReader
from rumor.server.errors import InvalidKeyError, InvalidOperationError, KeyNotFoundError, TypeConflictError
from rumor.server.hlc_source import HLCSource
from rumor.server.state_cache import Entry, StateCache
from rumor.server.updates import Clear, Update, make_delta, new_state
from rumor.server.values import TYPES, check_binding, check_key, context_binding, read_context_of, render_value

Listener = Callable[[str, str, Any, "bytes | None"], None]


class DigestSink(Protocol):
    """Who keeps a hash tree over the digests stored beside the states (`server.replication.digests.DigestIndex`):
    told before a key's stored digest changes and once the change has committed (`merkle.StoredTree`)."""

    def storing(self, rows: list[tuple[str, bytes, int]]) -> None:
        """Writes of (key, digest, size) are about to be queued: each digest of the key's current state, whose
        anti-entropy blob is ``size`` bytes. Called before any of them is queued."""

    def stored(self, rows: list[tuple[str, bytes]]) -> None:
        """(key, digest) pairs now committed."""

#: keys `__iter__` reads at a time (from disk and memory)
ITER_PAGE_KEYS = 1024


class LocalUpdate(NamedTuple):
    """What a local update produced: the item after it (None when the key is left without a value), its delta, and
    the delta's encoding (None only when nothing changed and no key was created)."""

    item: Item | None
    delta: Any
    blob: bytes | None


@dataclass(slots=True)
class Item:
    """What a read shows: the value in its JSON shape plus the opaque context to hand back with a later update.

    An Item is never changed once made (not frozen only because a frozen dataclass's constructor costs twice as much,
    and every write makes one) and cached per key until the key changes, so the bytes of its response body are too:
    `encoded(fmt, encode)` encodes once per format, and every further read of an unchanged key reuses them.
    """

    key: str
    type_name: str
    value: Any
    context: str
    _bodies: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type_name, "value": self.value, "context": self.context}

    def to_record(self) -> dict[str, Any]:
        """The fields as stored with an op_id result (`Item(**record)` rebuilds it)."""
        return {"key": self.key, "type_name": self.type_name, "value": self.value, "context": self.context}

    def encoded(self, fmt: str, encode: Callable[[Any, str], bytes]) -> bytes:
        body = self._bodies.get(fmt)
        if body is None:
            body = self._bodies[fmt] = encode(self.to_json(), fmt)
        return body


@dataclass(frozen=True)
class KeyPage:
    """One page of a listing; `next` is the cursor for the following page (None = no more keys)."""

    keys: list[tuple[str, str]]
    next: str | None


def _valid_key(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKeyError:
        return False
    return True


def _unkept(key: str, type_name: str, blob: bytes) -> Entry:
    """An entry for a read of a cold key that changes nothing: not cached, not kept in memory."""
    return Entry(type_name, blob=blob, key=key, on_disk=True)


class Keyspace:
    def __init__(self, replica: str, hlc: HLCSource, *, op_keyed_increments: bool = True,
                 cache_bytes: int | None = None, disk: StateReader | None = None) -> None:
        self.replica = replica
        self.hlc = hlc
        #: decoded states, bounded (`server.state_cache`): the checkpointer evicts what is over budget
        self.cache = StateCache(cache_bytes)
        #: what entries report their use to: nothing when everything is in memory and the cache is unbounded (no
        #: bookkeeping); with a disk, always (the cache decides which keys stay in memory)
        self._tracking = self.cache if cache_bytes is not None or disk is not None else None
        #: whether an increment with an op_id is keyed by it (off while writing the previous release's encoding,
        #: which cannot hold such entries: `crdt.set_write_version`)
        self.op_keyed_increments = op_keyed_increments
        #: the keys in memory (all of them without a disk)
        self._entries: SortedDict = SortedDict()
        self._disk = disk
        #: keys in memory and on disk together (neither drops a key: an emptied key keeps its state)
        self._count = 0 if disk is None else disk.count()
        if disk is not None:
            self.cache.forget = self._forget
        self._local_listeners: list[Listener] = []
        self._remote_listeners: list[Listener] = []
        #: the hash tree over the stored digests, once replication attaches one
        self.digest_sink: DigestSink | None = None
        #: counters that may hold op-keyed increments (`crdt.counter_ops`): what `server.op_folding` visits
        #: (a dict used as an ordered set: the folder takes keys from the front and puts back those still holding some)
        self.op_keyed: dict[str, None] = {}

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        if key in self._entries:
            return True
        return self._disk is not None and isinstance(key, str) and self._disk.type_of(key) is not None

    def __iter__(self) -> Iterator[str]:
        """Every key in order, read a page at a time (from disk and memory), so changes made meanwhile are safe."""
        after: str | None = None
        while keys := self.keys_after(after, ITER_PAGE_KEYS):
            yield from keys
            after = keys[-1]

    @property
    def disk(self) -> StateReader | None:
        return self._disk

    def unsettled_keys(self) -> list[str]:
        """Keys whose state may differ from what the `states` table holds (changed since their last committed
        checkpoint: what a hash tree over the stored digests must rehash); every key without a disk."""
        if self._disk is None:
            return list(self)
        return [key for key, entry in self._entries.items() if not entry.on_disk]

    @property
    def resident(self) -> int:
        """Keys held in memory (all of them without a disk)."""
        return len(self._entries)

    def entry(self, key: str) -> Entry | None:
        """The key's entry, brought into memory from disk if need be (a change to its state then lands here)."""
        entry = self._entries.get(key)
        if entry is None and self._disk is not None:
            row = self._disk.get(key)
            if row is not None:
                entry = self._brought(key, row[0], row[1])
        return entry

    def _brought(self, key: str, type_name: str, blob: bytes) -> Entry:
        entry = self._entries[key] = Entry(type_name, blob=blob, key=key, cache=self._tracking, on_disk=True)
        self.cache.used(entry)  # tracked as bytes: eviction takes the key out of memory again
        return entry

    def prefetch(self, keys: Iterable[str]) -> None:
        """Brings those of ``keys`` that are on disk only into memory in one batch read (what `entry` would do for
        each with a point read): a batch of writes to cold keys reads their rows in a few statements. Keys that
        are not valid (`check_key`) are left out: their writes are refused anyway."""
        if self._disk is None:
            return
        entries = self._entries
        cold = [key for key in dict.fromkeys(keys) if key not in entries and _valid_key(key)]
        if cold:
            for key, (type_name, blob) in self._disk.get_many(cold).items():
                self._brought(key, type_name, blob)

    def entry_in_memory(self, key: str) -> bool:
        return key in self._entries

    def checkpoint_due(self, key: str) -> bool:
        """Whether ``key`` changed since its state was last stored, so that the checkpointer will write its current
        state (with its digest columns) to disk."""
        entry = self._entries.get(key)
        return entry is not None and entry.unstored

    def cold(self, key: str) -> bool:
        """Whether ``key`` exists with its state held only as stored bytes (on disk only, or in memory undecoded):
        its encoding then costs a read, never an encode."""
        entry = self._entries.get(key)
        if entry is None:
            return self._disk is not None and self._disk.type_of(key) is not None
        return not entry.decoded

    def _peek(self, key: str) -> Entry | None:
        """The key's entry for a read that changes nothing: from disk, one that is not kept in memory."""
        entry = self._entries.get(key)
        if entry is None and self._disk is not None:
            row = self._disk.get(key)
            if row is not None:
                return _unkept(key, *row)
        return entry

    def _add(self, key: str, entry: Entry) -> Entry:
        """A key new here (neither in memory nor on disk)."""
        self._entries[key] = entry
        self._count += 1
        return entry

    def _forget(self, key: str) -> None:
        """Evicted with its bytes committed on disk (`StateCache.shrink`): the key leaves memory."""
        self._entries.pop(key, None)

    def type_of(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is not None:
            return entry.type_name
        return None if self._disk is None else self._disk.type_of(key)

    def item(self, key: str) -> Item | None:
        """The current value, or None when the key was never written or is empty."""
        entry = self.entry(key)
        if entry is None or entry.is_empty():
            return None
        return self._item(key, entry)

    def _item(self, key: str, entry: Entry) -> Item:
        if entry.cached is None:
            entry.cached = Item(key, entry.type_name, render_value(entry.type_name, entry.state),
                                read_context_of(entry.binding or self._bind(key, entry), entry.state))
        return entry.cached

    @staticmethod
    def _bind(key: str, entry: Entry) -> bytes:
        entry.binding = context_binding(key, entry.type_name)
        return entry.binding

    def check_type(self, key: str, update: Update) -> None:
        """Raises what `apply_local` would raise for a type problem, without changing anything."""
        self._check_type(key, update, self.entry(key))

    def _check_type(self, key: str, update: Update, entry: Entry | None) -> None:
        if isinstance(update, Clear):
            # with a client's context, a key that holds nothing here may still hold what that read saw elsewhere
            # (not received yet): the clear is then deferred until it arrives (see crdt.dot_kernel)
            if (entry is None or entry.state.is_empty()) and self._cleared_type(key, update) is None:
                raise KeyNotFoundError(key)
        elif entry is not None and entry.type_name != update.type_name:
            raise TypeConflictError(key, entry.type_name, str(update.type_name), emptied=entry.state.is_empty())

    def _cleared_type(self, key: str, update: Clear) -> str | None:
        """The type a clear with a client's context acts on: the key's, or for a key unknown here the type whose
        binding the context carries (a read of that key and type elsewhere). None: nothing to clear."""
        binding = update.context_binding
        if binding is None:
            return None
        type_name = self.type_of(key)
        if type_name is not None:
            return type_name
        return next((name for name in TYPES if context_binding(key, name) == binding), None)

    def apply_local(self, key: str, update: Update, *, render: bool = True, op_id: str | None = None) -> LocalUpdate:
        """Applies a validated update made on this node and returns its item, delta and the delta's encoding.

        The state changes only once the delta has encoded (so it is storable and gossipable): an update that fails,
        whatever the reason, leaves every state byte-identical. The item is None when the key is left without a
        value; an update that changes nothing on a key that does not exist (a remove of what was never there)
        creates no key and returns no blob. The type is fixed by the key's first write. Without `render` the item
        is not made (None): a caller that answers with a status only asks `has_value` instead. An increment with
        an `op_id` counts once however many nodes apply it (`server.updates.make_delta`).
        """
        entry = self.entry(key)
        if entry is None or isinstance(update, Clear) or entry.type_name != update.type_name:
            self._check_type(key, update, entry)  # the usual case, a write to a key of its type, needs none
        type_name = entry.type_name if entry is not None else update.type_name
        if type_name is None:  # a clear of a key unknown here, with the context of a read elsewhere
            assert isinstance(update, Clear)
            type_name = self._cleared_type(key, update)
        assert type_name is not None
        if update.context_binding is not None and (entry is None or update.context_binding != entry.binding):
            check_binding(key, type_name, update.context_binding)
        state = entry.state if entry is not None else new_state(type_name)
        try:
            delta = make_delta(state, update, self.replica, self.hlc, op_id if self.op_keyed_increments else None)
        except CRDTError as exc:  # the algebra refused it (too many deferred removes waiting, say): the client's 400
            raise InvalidOperationError(str(exc)) from exc
        if entry is None and delta.is_bottom():
            return LocalUpdate(None, delta, None)
        blob = encode(delta)
        state.merge(delta)
        if entry is None:
            entry = self._add(key, Entry(type_name, state, key=key, cache=self._tracking))
        entry.changed()
        if op_id is not None and type_name == "counter" and self.op_keyed_increments:
            self.op_keyed[key] = None
        for listener in self._local_listeners:
            listener(key, type_name, delta, blob)
        if state.is_empty() or not render:
            return LocalUpdate(None, delta, blob)
        return LocalUpdate(self._item(key, entry), delta, blob)

    def has_value(self, key: str) -> bool:
        entry = self._entries.get(key)
        if entry is not None:
            return not entry.is_empty()
        return self._disk is not None and self._disk.has_value(key)

    def load_encoded(self, states: list[tuple[str, str, bytes]]) -> None:
        """Recovery of checkpointed states into an empty in-memory keyspace, each kept as its stored bytes until first
        read (`Entry`), in one sorted bulk insert. (A counter holding op-keyed increments is visited by the op folder
        once something touches it again.) A disk-backed keyspace reads its states from disk instead."""
        if self._entries or self._disk is not None:
            raise ValueError("load_encoded fills an empty in-memory keyspace")
        cache = self._tracking
        self._entries.update((key, Entry(name, blob=blob, key=key, cache=cache)) for key, name, blob in states)
        self._count = len(self._entries)

    def install_stored(self, rows: Iterable[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
        """Takes raw (key, type name, stored bytes) rows, as another node stores them (a bulk catch-up), for the keys
        unknown here, without decoding them; returns the rows it took, in their order. The caller stores those (a
        checkpoint, in one transaction) and calls `persisted` once they are committed; until then they are held in
        memory as bytes. A key known here is left out: its row must be merged the usual way (`merge_remote`).
        Tells no listener. Rows are trusted to be checked (keys, types and bytes) by the caller."""
        rows = list(rows)
        for key, type_name, _ in rows:  # all or nothing
            if type_name not in TYPES:
                raise TypeConflictError(key, "nothing", type_name)
        entries = self._entries
        known = set() if self._disk is None else self._disk.existing([key for key, _, _ in rows])
        taken: list[tuple[str, str, bytes]] = []
        for key, type_name, blob in rows:
            if key in entries or key in known:
                continue  # held here (or earlier in these rows): merged the usual way
            self._add(key, Entry(type_name, blob=blob, key=key, cache=self._tracking))
            taken.append((key, type_name, blob))
        return taken

    def storing(self, rows: list[tuple[str, bytes, int]]) -> None:
        """Writes of the current states of keys with (key, digest, size) beside them are about to be queued (tells
        the digest sink; before the writes are queued, since once queued they may commit at any moment)."""
        if self.digest_sink is not None and rows:
            self.digest_sink.storing(rows)

    def persisted(self, rows: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """(key, stored bytes, digest) whose write to the `states` table has committed: an entry still holding
        exactly those bytes may leave memory (at once when it is not decoded, else once the cache evicts it); the
        digest sink hears of the digests. Does nothing without a disk."""
        if self._disk is None:
            return
        rows = list(rows)
        if self.digest_sink is not None:
            self.digest_sink.stored([(key, digest) for key, _, digest in rows if digest is not None])
        cache = self.cache
        for key, blob, _ in rows:
            entry = self._entries.get(key)
            if entry is None or entry.blob is not blob:  # changed since (or already gone): its next checkpoint
                continue
            entry.on_disk = True
            if entry.decoded:
                cache.used(entry)  # back in the cache's order if it was evicted meanwhile: it leaves with its turn
            else:
                cache.discard(entry)
                del self._entries[key]

    def load(self, key: str, type_name: str, state: Any) -> None:
        """Recovery: installs a decoded state (or joins it into what is there) without telling listeners."""
        entry = self.entry(key)
        if entry is None:
            self._add(key, Entry(type_name, state, key=key, cache=self._tracking))
        elif entry.type_name != type_name:
            raise TypeConflictError(key, entry.type_name, type_name)
        else:
            entry.state.merge(state)
            entry.changed()
        if type_name == "counter" and state.has_ops():
            self.op_keyed[key] = None

    def merge_remote(self, key: str, type_name: str, state_or_delta: Any) -> None:
        """Joins a delta or full state received from another node: its key passes the same check as a client's."""
        check_key(key)
        entry = self.entry(key)
        if entry is None:
            if type_name not in TYPES:
                raise TypeConflictError(key, "nothing", type_name)
            entry = self._add(key, Entry(type_name, new_state(type_name), key=key, cache=self._tracking))
        elif entry.type_name != type_name:
            raise TypeConflictError(key, entry.type_name, type_name)
        entry.state.merge(state_or_delta)
        entry.changed()
        if type_name == "counter" and state_or_delta.has_ops():
            self.op_keyed[key] = None
        for listener in self._remote_listeners:
            listener(key, type_name, state_or_delta, None)

    def join_local(self, key: str, type_name: str, delta: Any, blob: bytes) -> None:
        """Joins `delta` (encoded as `blob`, which the caller made first) into `key` as this node's own change: the
        local listeners hear of it as of a local update, so replication pushes it and marks the key's digest."""
        check_key(key)
        entry = self.entry(key)
        if entry is None:
            if type_name not in TYPES:
                raise TypeConflictError(key, "nothing", type_name)
            entry = self._add(key, Entry(type_name, new_state(type_name), key=key, cache=self._tracking))
        elif entry.type_name != type_name:
            raise TypeConflictError(key, entry.type_name, type_name)
        entry.state.merge(delta)
        entry.changed()
        for listener in self._local_listeners:
            listener(key, type_name, delta, blob)

    def subscribe(self, callback: Listener, *, remote: bool = False) -> Callable[[], None]:
        """Calls `callback(key, type_name, delta, blob)` after each local update (and each remote merge if `remote`).

        Listeners run synchronously inside the update: keep them cheap (queue the delta). Returns an unsubscribe.
        """
        self._local_listeners.append(callback)
        if remote:
            self._remote_listeners.append(callback)

        def unsubscribe() -> None:
            for listeners in (self._local_listeners, self._remote_listeners):
                if callback in listeners:
                    listeners.remove(callback)

        return unsubscribe

    def encoded_state(self, key: str) -> bytes:
        """The key's state as `crdt.encode` writes it: canonical, so equal states give equal bytes."""
        held = self.stored(key)
        if held is None:
            raise KeyNotFoundError(key)
        return held[1]

    def stored(self, key: str) -> tuple[str, bytes] | None:
        """(type name, `encoded_state`) of ``key``, or None; a cold key is read from disk and not kept in memory."""
        entry = self._peek(key)
        return None if entry is None else (entry.type_name, entry.encoded())

    def stored_many(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        """`stored` of many keys: those in memory from it, the cold ones read from disk in one batch (a bulk walk's
        reply carries hundreds of keys, a point read each otherwise). Keys that do not exist are left out."""
        found: dict[str, tuple[str, bytes]] = {}
        cold: list[str] = []
        entries = self._entries
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                cold.append(key)
            else:
                found[key] = (entry.type_name, entry.encoded())
        if cold and self._disk is not None:
            for key, (type_name, blob) in self._disk.get_many(cold).items():
                found[key] = (type_name, _unkept(key, type_name, blob).encoded())
        return found

    def _memory_after(self, after: str | None) -> Iterator[str]:
        return self._entries.irange(minimum=after, inclusive=(after is None, True))  # type: ignore[no-any-return]

    def keys_after(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` keys strictly after `after` (from the first when None) in key order, emptied keys included."""
        memory = list(islice(self._memory_after(after), limit))
        if self._disk is None:
            return memory
        return sorted(set(memory).union(self._disk.keys_after(after, limit)))[:limit]

    def stored_after(self, after: str | None, limit: int) -> list[tuple[str, str, bytes]]:
        """`keys_after` with each key's type name and encoded state (`encoded_state`): what an export pages through,
        reading cold keys from disk a page at a time without keeping them in memory."""
        if self._disk is None:
            return [(key, self._entries[key].type_name, self._entries[key].encoded())
                    for key in self.keys_after(after, limit)]
        rows = {key: (type_name, blob) for key, type_name, blob in self._disk.rows_after(after, limit)}
        entries = self._entries
        page: list[tuple[str, str, bytes]] = []
        for key in sorted(rows.keys() | set(islice(self._memory_after(after), limit)))[:limit]:
            entry = entries.get(key)
            if entry is None:
                type_name, blob = rows[key]
                entry = Entry(type_name, blob=blob, key=key, on_disk=True)
            page.append((key, entry.type_name, entry.encoded()))
        return page

    def page(self, prefix: str = "", after: str | None = None, limit: int = 100) -> KeyPage:
        """Non-empty keys starting with `prefix`, strictly after `after`, in key order, at most `limit`."""
        keys: list[tuple[str, str]] = []
        start = prefix if after is None or after < prefix else after
        inclusive = after is None or after < prefix
        for key, type_name in self._listing(prefix, start, inclusive):
            if len(keys) == limit:
                return KeyPage(keys, keys[-1][0])
            keys.append((key, type_name))
        return KeyPage(keys, None)

    def _listing(self, prefix: str, start: str, inclusive: bool) -> Iterator[tuple[str, str]]:
        """(key, type name) of the non-empty keys from `start` on while they start with `prefix`: the keys in memory
        (their view wins: it is newer) merged in key order with the rest, read from disk as needed."""
        entries = self._entries
        memory = ((key, entries[key].type_name) for key in self._memory_prefix(prefix, start, inclusive)
                  if not entries[key].is_empty())
        if self._disk is None:
            return memory
        on_disk = (row for row in self._disk.listing(start, inclusive, prefix) if row[0] not in entries)
        return merge(memory, on_disk)

    def _memory_prefix(self, prefix: str, start: str, inclusive: bool) -> Iterator[str]:
        for key in self._entries.irange(minimum=start, inclusive=(inclusive, True)):
            if not key.startswith(prefix):
                return
            yield key

    def adopt_joined(self, key: str, type_name: str, joined: Any) -> None:
        """Installs ``joined`` as ``key``'s state: the caller computed it off the event loop as the join of a received
        state and the key's state as it was then, and checked nothing changed the key since (`server.offload`). So
        this is `merge_remote` of the received state at the cost of an assignment, where a merge of a million
        elements holds the loop for a second. Listeners hear of ``joined`` as of a merged state."""
        check_key(key)
        entry = self.entry(key)
        if entry is None:
            if type_name not in TYPES:
                raise TypeConflictError(key, "nothing", type_name)
            entry = self._add(key, Entry(type_name, joined, key=key, cache=self._tracking))
        elif entry.type_name != type_name:
            raise TypeConflictError(key, entry.type_name, type_name)
        else:
            entry.replace(joined)
        entry.changed()
        if type_name == "counter" and joined.has_ops():
            self.op_keyed[key] = None
        for listener in self._remote_listeners:
            listener(key, type_name, joined, None)
