"""The change feed: cursors, the index of recent changes, and bounded subscribers (`GET /v1/watch` is
`server.watch_http` over this).

What a watcher is promised: every change of a key under its prefix (a local write, or a delta or state received from
a peer) reaches it as an event carrying the key's *current* state, or the feed says explicitly that it cannot (a
`Reset`, with how to resync: list the prefix, then watch from the reset's cursor). Never a silent gap.

**Cursors.** A cursor is `v1.<epoch>.<seq>.<node id>` (`Cursor`). `seq` is the storage log's sequence number of the
change's record (`Storage.append_delta`; in memory, the same counter without a disk), so it orders every change this
node made or received. `epoch` names one history of those numbers: on a durable node it is drawn once and kept in the
data directory's meta table (`watch_epoch`), so cursors outlive restarts; a new data directory (or an in-memory node,
which draws one per start and loses everything when it stops) has a new epoch, and a cursor of another epoch or of
another node gets a `Reset` rather than a replay from numbers that mean something else. Storage keeps its highest seq
in meta when it drops log rows (see `server.storage`), so numbers never restart from zero behind an emptied log.

**Only what is on disk is announced.** A change is announced when its record's commit settles (at once in memory),
in seq order, so a cursor never names a change that a crash could take back; an event's state is rendered when it is
sent, and a key whose newest write is still waiting for its commit is held back until that commit announces it
(`uncommitted`), as a read waits for it.

**Replay.** The feed keeps an index, key -> seq of its last change, in the order of those changes, for the last
`max_index_keys` distinct keys (about 120 bytes a key: 6 MB at the default). Resuming after cursor C sends, once
each and in order of their last change, the keys under the prefix whose last change is after C, with their current
states: changes to one key coalesce into its latest state, and per-key order holds because a key's event always
shows a state at least as new as every change before its cursor. A cursor older than what the index still covers
(`floor`: the newest seq evicted, or after a restart what the retained log does not reach back to) gets a `Reset`.
After a restart the index is rebuilt from the log rows still on disk; changes folded into checkpoints before the
stop are no longer known by key, so only a watcher that had caught up with them resumes without a reset.

**Bounded subscribers.** A subscriber holds pending keys, not rendered events (`OrderedDict` key -> seq, coalesced:
a key changed again moves to the end). More than `max_pending_keys` of them (a consumer that stopped reading, or a
resume from too far back) empties the buffer and leaves one `Reset` ("slow consumer") with the cursor of the change
that overflowed: memory per subscriber is capped whatever the write rate, and the consumer is told to resync.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from rumor.server.errors import InvalidOptionError
from rumor.server.keyspace import Keyspace
from rumor.server.storage import Recovered, Storage

log = logging.getLogger(__name__)

EPOCH_META = "watch_epoch"
MAX_INDEX_KEYS = 50_000
MAX_PENDING_KEYS = 10_000

#: where a change came from, as events name it; UNKNOWN for changes recovered from the log after a restart (the log
#: does not record who made them)
LOCAL, PEER, UNKNOWN = 0, 1, 2
ORIGINS = ("local", "peer", "unknown")

SLOW_CONSUMER = "slow consumer"
OTHER_NODE = "cursor of another node"
OTHER_EPOCH = "cursor of another incarnation of this node (its log is gone)"
TOO_OLD = "cursor too old"
AHEAD = "cursor ahead of this node's log"
TOO_FAR_BEHIND = "cursor too far behind"
CLOSED = "feed closed"
INTERNAL = "internal error"

_CURSOR = re.compile(r"v1\.([0-9a-f]{16})\.(0|[1-9][0-9]{0,18})\.([A-Za-z0-9._~%-]{1,1600})")


class InvalidCursorError(InvalidOptionError):
    """`since` is not a cursor this software could have made (a well-formed cursor it cannot resume is a reset)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in one node's history of changes (see the module docstring). Its text is URL-safe: the node id
    is percent-encoded, everything else is digits, hex and dots."""

    node_id: str
    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"v1.{self.epoch}.{self.seq}.{quote(self.node_id, safe='')}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.fullmatch(text)
        node_id = None
        if match is not None:
            try:
                node_id = unquote(match.group(3), errors="strict")
            except UnicodeError:
                node_id = None
        if match is None or node_id is None or quote(node_id, safe="") != match.group(3) \
                or int(match.group(2)) >= 2**63:
            raise InvalidCursorError(f"since is not a cursor of this API: {text[:80]!r} (pass the 'cursor' of an "
                                     "event or an answer, or leave since out to watch from now)")
        return cls(node_id, match.group(1), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class Change:
    """A key to announce: its last change's seq and origin (one of ORIGINS' indexes)."""

    key: str
    seq: int
    origin: int


@dataclass(frozen=True, slots=True)
class Reset:
    reason: str
    cursor: Cursor

    def to_json(self, prefix: str) -> dict[str, str]:
        listing = "GET /v1/kv" + (f"?prefix={quote(prefix, safe='')}" if prefix else "")
        return {"reason": self.reason, "cursor": str(self.cursor),
                "resync": f"list the keys with {listing} (follow 'next' to the last page), read the ones you need, "
                          f"then watch again with since={self.cursor}"}


@dataclass(slots=True)
class Taken:
    """What a subscriber had: a reset (first, if any), then changes in order; `position` is the cursor to resume
    from (the last change's when more are waiting, else the feed's head: everything up to it has been seen)."""

    reset: Reset | None
    changes: list[Change]
    position: Cursor


def _pack(seq: int, origin: int) -> int:
    """A change as one int: an index entry costs one int object instead of a tuple of two."""
    return seq << 2 | origin


class Subscriber:
    """One watcher's pending keys (bounded, coalesced) and the event its reader waits on. Made by
    `ChangeFeed.subscribe`; `close` it when the reader goes (the HTTP handler does, in `finally`)."""

    def __init__(self, feed: ChangeFeed, prefix: str, limit: int) -> None:
        self.feed = feed
        self.prefix = prefix
        self.limit = limit
        self._pending: OrderedDict[str, int] = OrderedDict()
        self._reset: Reset | None = None
        self.ready = asyncio.Event()
        self.closed = False
        self.resets = 0

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, key: str, packed: int) -> None:
        """A committed change of `key` under the prefix: coalesced into its pending entry, or added; past the limit
        the buffer is dropped for a reset at this change."""
        pending = self._pending
        if key in pending:
            pending.move_to_end(key)
        elif len(pending) >= self.limit:
            pending.clear()
            self.reset(SLOW_CONSUMER, packed >> 2)
            return
        pending[key] = packed
        self.ready.set()

    def reset(self, reason: str, seq: int) -> None:
        self._reset = Reset(reason, self.feed.cursor(seq))
        self.resets += 1
        self.ready.set()

    def take(self, limit: int) -> Taken:
        """Up to `limit` pending changes, oldest first, after the pending reset if there is one."""
        reset, self._reset = self._reset, None
        changes: list[Change] = []
        pending = self._pending
        while pending and len(changes) < limit:
            key, packed = pending.popitem(last=False)
            changes.append(Change(key, packed >> 2, packed & 3))
        if pending:
            position = self.feed.cursor(changes[-1].seq)
        else:
            position = self.feed.cursor(self.feed.head)
            if not self.closed:
                self.ready.clear()
        return Taken(reset, changes, position)

    async def wait(self, timeout_s: float) -> bool:
        """Waits until something is pending (or the subscriber closed), at most `timeout_s`; True if it was."""
        if self.ready.is_set():
            return True
        try:
            async with asyncio.timeout(max(timeout_s, 0)):
                await self.ready.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Frees the buffer at once and wakes the reader; idempotent."""
        if not self.closed:
            self.closed = True
            self._pending.clear()
            self.feed.discard(self)
            self.ready.set()


class ChangeFeed:
    """One node's change feed. `Node` calls `logged` for every record it appends to the storage log (local writes
    and received merges alike: `_log` is the one place both go through) and `close` when it stops.

    `max_index_keys` and `max_pending_keys` are the memory bounds (see the module docstring); tests lower them.
    """

    def __init__(self, node_id: str, epoch: str, keyspace: Keyspace, *, head: int = 0, floor: int | None = None,
                 uncommitted: Callable[[str], bool] = lambda _key: False,
                 on_failure: Callable[[str, BaseException], None] | None = None,
                 max_index_keys: int = MAX_INDEX_KEYS, max_pending_keys: int = MAX_PENDING_KEYS) -> None:
        self.node_id = node_id
        self.epoch = epoch
        self.keyspace = keyspace
        #: seq of the newest change announced (every change up to it has been announced)
        self.head = head
        #: every key whose last change is after `floor` is in the index
        self.floor = head if floor is None else floor
        self.uncommitted = uncommitted
        self.on_failure = on_failure
        self.max_index_keys = max_index_keys
        self.max_pending_keys = max_pending_keys
        self._index: OrderedDict[str, int] = OrderedDict()
        self._subscribers: set[Subscriber] = set()
        self._waiting: deque[tuple[int, str, int, asyncio.Future[None]]] = deque()
        self._watched: asyncio.Future[None] | None = None
        self.closed = False

    @classmethod
    async def open(cls, node_id: str, storage: Storage, recovered: Recovered, keyspace: Keyspace,
                   **options: Any) -> ChangeFeed:
        """The feed of a node just recovered: its epoch from meta (drawn and stored at the first start), its index
        rebuilt from the log rows recovered (origin unknown: the log does not say)."""
        epoch = recovered.meta.get(EPOCH_META) if storage.durable else None
        if epoch is None or not re.fullmatch(r"[0-9a-f]{16}", epoch):
            epoch = secrets.token_hex(8)
            if storage.durable:
                await storage.put_meta(EPOCH_META, epoch)
        deltas = recovered.deltas
        feed = cls(node_id, epoch, keyspace, head=storage.last_seq,
                   floor=deltas[0][0] - 1 if deltas else storage.last_seq, **options)
        for seq, key, _type, _blob in deltas:
            feed._index_change(key, _pack(seq, UNKNOWN))
        return feed

    def cursor(self, seq: int) -> Cursor:
        return Cursor(self.node_id, self.epoch, seq)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers)

    # -- changes in ----------------------------------------------------------------------------------------------

    def logged(self, key: str, seq: int, origin: int, written: asyncio.Future[None]) -> None:
        """Record `seq` of `key` was queued; `written` is its commit. Announced once committed, in seq order.

        Called inside every write: it never raises (a bug here is reported and turns into resets, see `_failed`).
        """
        try:
            if written.done() and not self._waiting:  # in memory: committed already
                if not written.cancelled() and written.exception() is None:
                    self._changed(key, _pack(seq, origin))
                return
            self._waiting.append((seq, key, origin, written))
            if written is not self._watched:  # one callback per commit, not per record
                self._watched = written
                written.add_done_callback(self._settled)
        except Exception as exc:
            self._failed(exc)

    def _settled(self, _written: asyncio.Future[None]) -> None:
        """Commits settle in order: announce every record whose commit is done, oldest first. A failed commit's
        records are not durable, so they are not announced (their keys' next committed change will be)."""
        try:
            waiting = self._waiting
            while waiting and waiting[0][3].done():
                seq, key, origin, written = waiting.popleft()
                if not written.cancelled() and written.exception() is None:
                    self._changed(key, _pack(seq, origin))
            if not waiting:
                self._watched = None
        except Exception as exc:
            self._failed(exc)

    def _changed(self, key: str, packed: int) -> None:
        self.head = packed >> 2
        self._index_change(key, packed)
        for subscriber in self._subscribers:
            if key.startswith(subscriber.prefix):
                subscriber.push(key, packed)

    def _index_change(self, key: str, packed: int) -> None:
        index = self._index
        if key in index:
            index.move_to_end(key)
        index[key] = packed
        if len(index) > self.max_index_keys:
            _, evicted = index.popitem(last=False)
            self.floor = max(self.floor, evicted >> 2)

    def _failed(self, exc: BaseException) -> None:
        """A bug in the feed: reported once (logged, counted, shown by /health through the supervisor), and what
        it may have missed is made explicit: the index is forgotten and every subscriber gets a reset."""
        self._index.clear()
        self._waiting.clear()
        self._watched = None
        self.floor = self.head
        for subscriber in list(self._subscribers):
            subscriber.reset(INTERNAL, self.head)
        if self.on_failure is not None:
            self.on_failure("watch", exc)
        else:
            log.error("change feed failed", exc_info=exc)

    # -- watchers out --------------------------------------------------------------------------------------------

    def subscribe(self, prefix: str = "", since: Cursor | None = None) -> Subscriber:
        """A subscriber of changes under `prefix` from now on, after the replay of what changed after `since` (or a
        reset saying why there is none)."""
        subscriber = Subscriber(self, prefix, self.max_pending_keys)
        if self.closed:
            subscriber.close()
            subscriber.reset(CLOSED, self.head)
            return subscriber
        if since is not None:
            problem = self._unresumable(since)
            if problem is not None:
                subscriber.reset(problem, self.head)
            else:
                self._replay(subscriber, since.seq)
        self._subscribers.add(subscriber)
        return subscriber

    def _unresumable(self, since: Cursor) -> str | None:
        if since.node_id != self.node_id:
            return f"{OTHER_NODE} ({since.node_id}; this is {self.node_id})"
        if since.epoch != self.epoch:
            return OTHER_EPOCH
        if since.seq > self.head:
            return AHEAD
        if since.seq < self.floor:
            return TOO_OLD
        return None

    def _replay(self, subscriber: Subscriber, after: int) -> None:
        """The keys under the prefix whose last change is after `after`, oldest first (walked from the newest end
        of the index, so a recent cursor costs only what changed since)."""
        prefix = subscriber.prefix
        found: list[tuple[str, int]] = []
        for key, packed in reversed(self._index.items()):
            if packed >> 2 <= after:
                break
            if key.startswith(prefix):
                if len(found) == subscriber.limit:
                    subscriber.reset(f"{TOO_FAR_BEHIND}: more than {subscriber.limit} keys changed since it",
                                     self.head)
                    return
                found.append((key, packed))
        for key, packed in reversed(found):
            subscriber._pending[key] = packed
        if found:
            subscriber.ready.set()

    def discard(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def event(self, change: Change) -> dict[str, Any] | None:
        """The event for `change` as the API shows it: the key's state now, as GET shows it (value and context
        None, `deleted` true, when the key holds nothing). None while the key's newest write awaits its commit:
        that commit announces the key again."""
        key = change.key
        if self.uncommitted(key):
            return None
        item = self.keyspace.item(key)
        return {"key": key, "type": self.keyspace.type_of(key), "value": None if item is None else item.value,
                "context": None if item is None else item.context, "cursor": str(self.cursor(change.seq)),
                "origin": ORIGINS[change.origin], "deleted": item is None}

    def close(self) -> None:
        """Ends every subscriber (their streams finish) and refuses new ones: the node is stopping."""
        self.closed = True
        for subscriber in list(self._subscribers):
            subscriber.close()


__all__ = ["EPOCH_META", "LOCAL", "ORIGINS", "PEER", "Change", "ChangeFeed", "Cursor", "InvalidCursorError", "Reset",
           "Subscriber", "Taken"]
