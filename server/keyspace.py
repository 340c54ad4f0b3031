"""The keyspace: key -> (API type name, CRDT state), ordered by key, with change listeners. In memory only.

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
- `keys_after(after, limit)`: every key in order, emptied ones too (what an export pages through).
- `join_local(key, type_name, delta, blob)`: joins a delta made here without an `Update` (an import) and tells the
  local listeners, so it spreads like a local write.
- `subscribe(callback, remote=False)`: `callback(key, type_name, delta, blob)` after every local update, with the
  delta's encoding; with ``remote=True`` after every remote merge too, with ``blob`` None.

Durability is not done here: `server.node.Node` wraps these calls with the storage log.
A key keeps its type and state after a delete (the state's causal context is what lets a concurrent update on another
node survive the delete); an empty value simply reads as absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

from sortedcontainers import SortedDict

from rumor.crdt import CRDTError, encode
from rumor.server.errors import InvalidOperationError, KeyNotFoundError, TypeConflictError
from rumor.server.hlc_source import HLCSource
from rumor.server.state_cache import Entry, StateCache
from rumor.server.updates import Clear, Update, make_delta, new_state
from rumor.server.values import TYPES, check_binding, check_key, context_binding, read_context_of, render_value

Listener = Callable[[str, str, Any, "bytes | None"], None]


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


class Keyspace:
    def __init__(self, replica: str, hlc: HLCSource, *, op_keyed_increments: bool = True,
                 cache_bytes: int | None = None) -> None:
        self.replica = replica
        self.hlc = hlc
        #: decoded states, bounded (`server.state_cache`): the checkpointer evicts what is over budget
        self.cache = StateCache(cache_bytes)
        #: what entries report their use to: nothing when the cache is unbounded (in memory), so no bookkeeping
        self._tracking = self.cache if cache_bytes is not None else None
        #: whether an increment with an op_id is keyed by it (off while writing the previous release's encoding,
        #: which cannot hold such entries: `crdt.set_write_version`)
        self.op_keyed_increments = op_keyed_increments
        self._entries: SortedDict = SortedDict()
        self._local_listeners: list[Listener] = []
        self._remote_listeners: list[Listener] = []
        #: counters that may hold op-keyed increments (`crdt.counter_ops`): what `server.op_folding` visits
        #: (a dict used as an ordered set: the folder takes keys from the front and puts back those still holding some)
        self.op_keyed: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def entry(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def type_of(self, key: str) -> str | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.type_name

    def item(self, key: str) -> Item | None:
        """The current value, or None when the key was never written or is empty."""
        entry = self._entries.get(key)
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
        entry = self._entries.get(key)
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
        entry = self._entries.get(key)
        if entry is not None:
            return entry.type_name
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
        entry = self._entries.get(key)
        if entry is None or isinstance(update, Clear) or entry.type_name != update.type_name:
            self.check_type(key, update)  # the usual case, a write to a key of its type, needs no more checks
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
            entry = self._entries[key] = Entry(type_name, state, key=key, cache=self._tracking)
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
        return entry is not None and not entry.is_empty()

    def load_encoded(self, states: list[tuple[str, str, bytes]]) -> None:
        """Recovery of checkpointed states, each kept as its stored bytes until first read (`Entry`), into an empty
        keyspace, in one sorted bulk insert. (A counter holding op-keyed increments is visited by the op folder once
        something touches it again.)"""
        if self._entries:
            raise ValueError("load_encoded fills an empty keyspace")
        cache = self._tracking
        self._entries.update((key, Entry(name, blob=blob, key=key, cache=cache)) for key, name, blob in states)

    def load(self, key: str, type_name: str, state: Any) -> None:
        """Recovery: installs a decoded state (or joins it into what is there) without telling listeners."""
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = Entry(type_name, state, key=key, cache=self._tracking)
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
        entry = self._entries.get(key)
        if entry is None:
            if type_name not in TYPES:
                raise TypeConflictError(key, "nothing", type_name)
            entry = Entry(type_name, new_state(type_name), key=key, cache=self._tracking)
            self._entries[key] = entry
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
        entry = self._entries.get(key)
        if entry is None:
            if type_name not in TYPES:
                raise TypeConflictError(key, "nothing", type_name)
            entry = self._entries[key] = Entry(type_name, new_state(type_name), key=key, cache=self._tracking)
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
        entry = self._entries.get(key)
        if entry is None:
            raise KeyNotFoundError(key)
        return entry.encoded()

    def keys_after(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` keys strictly after `after` (from the first when None) in key order, emptied keys included."""
        keys = self._entries.irange(minimum=after, inclusive=(after is None, True))
        return list(islice(keys, limit))

    def page(self, prefix: str = "", after: str | None = None, limit: int = 100) -> KeyPage:
        """Non-empty keys starting with `prefix`, strictly after `after`, in key order, at most `limit`."""
        keys: list[tuple[str, str]] = []
        start = prefix if after is None or after < prefix else after
        inclusive = (after is None or after < prefix, True)
        for key in self._entries.irange(minimum=start, inclusive=inclusive):
            if not key.startswith(prefix):
                break
            entry = self._entries[key]
            if entry.is_empty():
                continue
            if len(keys) == limit:
                return KeyPage(keys, keys[-1][0])
            keys.append((key, entry.type_name))
        return KeyPage(keys, None)

    def install_encoded(self, states: list[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
        """Installs states received whole for keys this keyspace does not hold (a bulk catch-up), each kept as its
        bytes until first read, as `load_encoded` does at recovery, telling no listener (the caller stores them, and
        their digests). Returns the rows it installed; it leaves keys it already holds alone (the caller merges
        those), and a key's later rows in the same call. The caller checked the bytes (a validating decode); an
        unknown type name refuses the whole call, changing nothing."""
        for key, type_name, _blob in states:
            if type_name not in TYPES:
                raise TypeConflictError(key, "nothing", type_name)
        entries, cache = self._entries, self._tracking
        installed: list[tuple[str, str, bytes]] = []
        fresh: dict[str, Entry] = {}
        for row in states:
            key, type_name, blob = row
            if key not in entries and key not in fresh:
                fresh[key] = Entry(type_name, blob=blob, key=key, cache=cache)
                installed.append(row)
        entries.update(fresh)
        return installed
