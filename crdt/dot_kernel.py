"""The dot-store kernel of delta-state CRDTs (Almeida, Shoker, Baquero 2018), written once for every type.

A causal CRDT is a pair (dot store, causal context). Every type here uses one store shape,
``DotMap<key, DotFun<payload>>``, flattened: each *dot* (one event) carries a ``key`` (set element, map field,
counter replica, or ``None`` for registers) and an immutable ``payload`` (the value written by that event).

* ORSet       = key: element,  payload: None              (a DotMap<elem, DotSet>)
* MVRegister  = key: None,     payload: value             (a DotFun<value>)
* LWWRegister = key: None,     payload: (hlc, replica, value); value() is the max by (hlc, replica, counter)
* LWWMap      = key: field,    payload: (hlc, replica, value)
* GCounter    = key: replica,  payload: that replica's running total (Riak's embedded counter: one entry per
  replica, tagged with its latest dot; an increment's delta covers the replica's previous dot so it replaces it)

Join of (s1, c1) with (s2, c2): a dot survives if it is in both stores, or in one store and not covered by the
other context. Because every dot belongs to exactly one key, the flat join equals the nested DotMap join.
The join runs in place and costs O(|s2| + |c2 cloud| + removed entries): for each replica in c2's compact
vector it walks whichever is smaller, the covered counter range or this store's dots of that replica (a
per-replica index ``_dots``), so applying a one-dot delta to a million-entry store touches one entry.

Subclasses (the CRDT types) name their key type (``DotKernel[str]``), set ``TYPE_NAME``, register with
``crdt.registry``, implement ``value()``, and may override the decoding hooks used by ``crdt.encoding``
(``_entry_from_wire``, which validates one decoded entry, and ``_key_from_wire``). Protected attributes are
part of the kernel API for subclasses in this package (LWWMap, ORMap): read them, mutate only through
``_join_store`` / ``merge``.

Embedding (ORMap): a nested store may *share* its parent's context object (``_bound_to``); ``_join_store``
then joins only the entries, against the two given contexts, and the parent merges its context once. It
returns the dots it added and removed so a parent can maintain a dot -> key index.

Deferred removes (Riak's ORSWOT keeps them too). A remove, overwrite or clear made with a *read context* from
another replica names dots this state may not have received yet: the client saw an element there, and its remove
must still take that element away when the add arrives here later. Such a delta carries ``(context, keys)`` in
``_deferred`` besides what it removes at once; every state keeps the deferred removes it merged and, after each
merge, drops the entries of those keys whose dots the context covers, until its own context covers the whole read
context (every dot that read saw has arrived, so nothing more can). They are part of the state: merged as a union,
encoded, logged and gossiped like the rest, so every replica applies them the same way whatever the delivery order.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any, ClassVar, Generic, Self, TypeVar

from rumor.crdt import entries
from rumor.crdt.causal_context import CausalContext
from rumor.crdt.delta_since import diff_since
from rumor.crdt.dot import Dot
from rumor.crdt.errors import InvalidOperationError, TypeMismatchError
from rumor.crdt.fast_merge import apply_write

DotT = tuple[str, int]
#: what a type keys its entries by (set element, map field, counter replica, None for registers)
K = TypeVar("K", bound=Hashable)
_EMPTY: dict[int, Any] = {}
_new = object.__new__
#: `_write_delta`'s default for ``held``: look the key's entries up
_UNSEEN: Any = object()
#: a deferred remove: the read context, and the keys it removes (None: every key, a clear)
Deferred = tuple[CausalContext, frozenset[K] | None]
_NO_DEFERRED: dict[tuple[Any, ...], Deferred[Any]] = {}  # shared while empty: a state pays one pointer for the feature
#: pending deferred removes a state will make locally; more wait for their adds than any client plausibly has in
#: flight, and each costs a context, so a remove past this is refused (merges are never refused: they carry the
#: deferred removes of other replicas, which were acknowledged)
MAX_DEFERRED = 1000


def context_identity(ctx: CausalContext) -> tuple[Any, ...]:
    """A hashable value equal for equal contexts: deferred removes with the same read context are one entry."""
    return (tuple(sorted(ctx._vv.items())), tuple(sorted((r, tuple(sorted(cs))) for r, cs in ctx._cloud.items())))


class DotKernel(Generic[K]):
    """Flat dot store + causal context; base class of every causal CRDT type.

    ``_keys``: key -> its entries: ``(replica, counter, payload)`` for one, ``{(replica, counter): payload}`` for
    two or more (``crdt.entries``)
    ``_dots``: replica -> {counter: key}  (index for O(delta) removals)
    ``_ctx``:  causal context (every dot ever seen by this state)
    ``_deferred``: context identity -> deferred remove (see the module docstring); usually the shared empty dict
    """

    #: whether removes with a foreign context are deferred (ORMap joins nested stores its own way: not yet)
    _DEFERS_REMOVES: ClassVar[bool] = True
    #: whether ``_insert``/``_discard`` keep an index of keys (ORMap): ``crdt.fast_merge`` then never bypasses them
    _KEYS_INDEXED: ClassVar[bool] = False

    __slots__ = ("_ctx", "_deferred", "_dots", "_keys")

    TYPE_NAME: ClassVar[str] = "dotkernel"

    def __init__(self) -> None:
        self._keys: dict[K, Any] = {}  # values: crdt.entries.Entries (Any: hot paths narrow by type() is tuple)
        self._dots: dict[str, dict[int, K]] = {}
        self._ctx = CausalContext()
        self._deferred: dict[tuple[Any, ...], Deferred[K]] = _NO_DEFERRED

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def _bound_to(cls, ctx: CausalContext) -> Self:
        """Empty store that shares (not copies) ``ctx``: how ORMap embeds a nested value."""
        new = _new(cls)
        new._keys = {}
        new._dots = {}
        new._ctx = ctx
        new._deferred = _NO_DEFERRED
        return new

    def _delta(self, entries: Iterable[tuple[DotT, K, Any]], covered: Iterable[DotT]) -> Self:
        """A delta holding ``entries`` whose context is their dots plus ``covered`` (what they replace)."""
        d = type(self)._bound_to(CausalContext())
        ctx = d._ctx
        for dot, key, payload in entries:
            d._insert(dot, key, payload)
            ctx.add(dot)
        for dot in covered:
            ctx.add(dot)
        return d

    def _insert(self, dot: DotT, key: K, payload: Any) -> None:
        r, c = dot
        per = self._dots.get(r)
        if per is None:
            self._dots[r] = {c: key}
        else:
            per[c] = key
        kd = self._keys.get(key)
        if kd is None:
            self._keys[key] = (r, c, payload)
        else:
            self._keys[key] = entries.with_entry(kd, r, c, payload)

    def _discard(self, r: str, c: int) -> None:
        per = self._dots[r]
        key = per.pop(c)
        if not per:
            del self._dots[r]
        kd = entries.without_entry(self._keys[key], r, c)
        if kd is None:
            del self._keys[key]
        else:
            self._keys[key] = kd

    # -- delta mutators (read self, return a delta; never modify self) ---------------------------------------
    def _observed(self, key: K, context: CausalContext | None) -> list[DotT]:
        kd = self._keys.get(key)
        if not kd:
            return []
        if context is None:
            return list(entries.dots(kd))
        return [d for d in entries.dots(kd) if context.contains(d)]

    def _write_delta(
        self, replica: str, key: K, payload: Any = None, context: CausalContext | None = None, held: Any = _UNSEEN
    ) -> Self:
        """Delta writing ``payload`` under ``key`` with a fresh dot, replacing the key's observed dots.

        ``context`` limits what is replaced to what the caller observed (default: everything this state has).
        ``held``: the key's entries, when the caller has already looked them up (a counter reads its total).
        This is the hot path of every mutator, hence the hand-built objects.
        """
        sctx = self._ctx
        kd = self._keys.get(key) if held is _UNSEEN else held
        if type(kd) is tuple and kd[0] == replica and context is None and replica not in sctx._cloud:
            # the usual overwrite: of the writer's own one entry (a counter increment), seen with all before it
            c = sctx._vv[replica] + 1
            d = _new(type(self))
            d._keys = {key: (replica, c, payload)}
            d._dots = {replica: {c: key}}
            d._deferred = _NO_DEFERRED
            ctx = d._ctx = _new(CausalContext)
            k = kd[1]
            if k != 1:
                ctx._vv = {}
                ctx._cloud = {replica: {c, k}}  # both dots in the cloud: compact, as neither is the first
            elif c == 2:
                ctx._vv = {replica: 2}
                ctx._cloud = {}
            else:
                ctx._vv = {replica: 1}
                ctx._cloud = {replica: {c}}
            return d
        c = (sctx.max_counter(replica) if replica in sctx._cloud else sctx._vv.get(replica, 0)) + 1
        d = _new(type(self))
        d._keys = {key: (replica, c, payload)}
        d._dots = {replica: {c: key}}
        d._deferred = _NO_DEFERRED
        ctx = d._ctx = _new(CausalContext)
        if not kd:
            if c == 1:
                ctx._vv = {replica: 1}
                ctx._cloud = {}
            else:
                ctx._vv = {}
                ctx._cloud = {replica: {c}}
        elif type(kd) is tuple and (context is None or context.contains((kd[0], kd[1]))):  # one entry, the usual
            q, k = kd[0], kd[1]
            if q == replica and k != 1 and c != 1:
                ctx._vv = {}
                ctx._cloud = {q: {c, k}}  # the writer's own earlier write: both dots in the cloud, compact
            else:
                ctx._vv = {replica: 1} if c == 1 else {}
                ctx._cloud = {} if c == 1 else {replica: {c}}
                ctx.add((q, k))
        else:
            ctx._vv = {replica: 1} if c == 1 else {}
            ctx._cloud = {} if c == 1 else {replica: {c}}
            for od in entries.dots(kd):
                if context is None or context.contains(od):
                    ctx.add(od)
        if context is not None:
            self._defer(d, context, (key,))
        return d

    def _write_many_delta(
        self, replica: str, writes: Iterable[tuple[K, Any]], context: CausalContext | None = None
    ) -> Self:
        """One delta writing each ``(key, payload)`` with its own consecutive fresh dot from ``replica``, each
        replacing its key's observed dots (limited to ``context`` when given). Keys must be distinct.

        The same as generating one write, merging it, then generating the next, without touching ``self``: a
        caller can encode the whole delta before anything changes.
        """
        n = self._ctx.max_counter(replica)
        entries: list[tuple[DotT, K, Any]] = []
        covered: list[DotT] = []
        for key, payload in writes:
            n += 1
            entries.append(((replica, n), key, payload))
            covered += self._observed(key, context)
        d = self._delta(entries, covered)
        if context is not None:
            self._defer(d, context, [key for _, key, _ in entries])
        return d

    def _remove_delta(self, keys: Iterable[K], context: CausalContext | None = None) -> Self:
        """Delta removing the observed dots of ``keys`` (limited to ``context`` when given, and deferred for the
        dots of ``context`` not received yet)."""
        keys = list(keys)
        d = self._delta((), (d for k in keys for d in self._observed(k, context)))
        if context is not None:
            self._defer(d, context, keys)
        return d

    def clear(self, context: CausalContext | None = None) -> Self:
        """Observed-reset delta: removes every entry covered by ``context`` (default: all observed).

        Entries written concurrently (not covered) survive. Cost O(size of self).
        """
        if context is None:
            covered: Iterable[DotT] = (d for kd in self._keys.values() for d in entries.dots(kd))
        else:
            covered = (d for kd in self._keys.values() for d in entries.dots(kd) if context.contains(d))
        d = self._delta((), covered)
        if context is not None:
            self._defer(d, context, None)
        return d

    def _defer(self, delta: DotKernel[K], context: CausalContext, keys: Iterable[K] | None) -> None:
        """Adds to ``delta`` the deferred remove of ``keys`` for the dots of ``context`` this state lacks."""
        if not self._DEFERS_REMOVES or self._ctx.covers(context):
            return  # every dot the read saw is here: the delta already removes all it can
        identity = context_identity(context)
        if len(self._deferred) >= MAX_DEFERRED and identity not in self._deferred:
            raise InvalidOperationError(f"{MAX_DEFERRED} removes already wait here for the adds they observed; "
                                        "retry once replication has caught up")
        delta._deferred = {identity: (context.copy(), None if keys is None else frozenset(keys))}

    # -- join -----------------------------------------------------------------------------------------------
    def merge(self, other: Self) -> None:
        """Join ``other`` into ``self`` in place (commutative, associative, idempotent). O(size of other)."""
        if type(other) is not type(self):
            raise TypeMismatchError(self.TYPE_NAME, getattr(other, "TYPE_NAME", type(other).__name__))
        if not apply_write(self, other):  # one-entry deltas, the commonest: crdt.fast_merge
            self._join_store(other)
            self._ctx.merge(other._ctx)
        if other._deferred:
            self._add_deferred(other._deferred)
        if self._deferred:
            self._apply_deferred()

    def _add_deferred(self, incoming: dict[tuple[Any, ...], Deferred[K]]) -> None:
        mine = self._deferred
        if mine is _NO_DEFERRED:
            mine = self._deferred = {}
        for identity, (ctx, keys) in incoming.items():
            held = mine.get(identity)
            if held is None:
                mine[identity] = (ctx.copy(), keys)
            elif held[1] is not None:  # the same read context: one entry removing both key sets
                mine[identity] = (held[0], None if keys is None else held[1] | keys)

    def _apply_deferred(self) -> None:
        """Removes what each deferred remove covers by now; drops those whose read context is all here."""
        finished = []
        for identity, (ctx, keys) in self._deferred.items():
            gone = [d for k in (list(self._keys) if keys is None else keys)
                    for d in entries.dots(self._keys.get(k, _EMPTY)) if ctx.contains(d)]
            for r, c in gone:
                self._discard(r, c)
            if self._ctx.covers(ctx):
                finished.append(identity)
        for identity in finished:
            del self._deferred[identity]
        if not self._deferred:
            self._deferred = _NO_DEFERRED

    def _join_store(self, other: DotKernel[K], changes: list[DotT] | None = None) -> None:
        """Join entries only (contexts untouched), judging coverage by ``self._ctx`` and ``other._ctx``.

        When ``changes`` is given, every dot added or removed is appended to it (a parent such as ORMap uses
        this to keep a dot -> key index). The caller merges the contexts afterwards (``merge`` does).
        """
        sdots = self._dots
        odots = other._dots
        octx = other._ctx
        # 1. entries of self covered by other's context but absent from other's store are gone.
        if sdots:
            ovv = octx._vv
            if ovv:
                for r, n in ovv.items():
                    mine = sdots.get(r)
                    if not mine:
                        continue
                    theirs = odots.get(r, _EMPTY)
                    gone = None
                    # walk whichever is smaller: our dots of r, or the range of r's counters other covers
                    for c in mine if len(mine) <= n else range(1, n + 1):
                        if c <= n and c not in theirs and c in mine:
                            if gone is None:
                                gone = [c]
                            else:
                                gone.append(c)
                    if gone is not None:
                        for c in gone:
                            self._discard(r, c)
                            if changes is not None:
                                changes.append((r, c))
            ocloud = octx._cloud
            if ocloud:
                for r, cs in ocloud.items():
                    mine = sdots.get(r)
                    if not mine:
                        continue
                    for c in cs:
                        if c in mine and c not in odots.get(r, _EMPTY):
                            self._discard(r, c)
                            if changes is not None:
                                changes.append((r, c))
        # 2. entries of other neither in self nor covered by self's context are new.
        svv = self._ctx._vv
        scloud = self._ctx._cloud
        skeys = self._keys
        for key, okd in other._keys.items():
            for dot, payload in (((okd[0], okd[1]), okd[2]),) if type(okd) is tuple else okd.items():
                r, c = dot
                # self's entries are all covered by self's context, so one coverage test decides: a covered
                # dot is either already here (dots are unique, payloads equal) or was removed since.
                if c <= svv.get(r, 0):
                    continue
                cl = scloud.get(r)
                if cl is not None and c in cl:
                    continue
                mine = sdots.get(r)
                if mine is None:
                    sdots[r] = {c: key}
                else:
                    mine[c] = key
                kd = skeys.get(key)
                if kd is None:  # the delta's own one-entry tuple when it has one: immutable, so shared
                    skeys[key] = okd if type(okd) is tuple else (r, c, payload)
                else:
                    skeys[key] = entries.with_entry(kd, r, c, payload)
                if changes is not None:
                    changes.append(dot)

    # -- reads ----------------------------------------------------------------------------------------------
    def value(self) -> Any:
        """What a client reads; each type defines it (ORMap reads nested values through this)."""
        raise NotImplementedError(f"{type(self).__name__} defines no value()")

    def context(self) -> CausalContext:
        """What this state has observed (a copy): pass it back to a remove/overwrite to limit it."""
        return self._ctx.copy()

    def delta_since(self, context: CausalContext) -> Self:
        """The smallest delta bringing a replica whose context is ``context`` up to this state: merging it there
        equals merging this whole state. Entries it lacks, the removals it may not have seen, every deferred
        remove; correctness and cost in ``crdt.delta_since``."""
        dctx, fresh = diff_since(self._ctx, self._dots, context)
        d = type(self)._bound_to(dctx)
        dots, keys = self._dots, self._keys
        if self._KEYS_INDEXED:
            for r, c in fresh:
                key = dots[r][c]
                d._insert((r, c), key, entries.payload_at(keys[key], r, c))
        else:  # _insert, inlined: this runs once per entry the peer lacks
            ddots, dkeys = d._dots, d._keys
            for r, c in fresh:
                key = dots[r][c]
                kd = keys[key]
                payload = kd[2] if type(kd) is tuple else kd[(r, c)]
                per = ddots.get(r)
                if per is None:
                    ddots[r] = {c: key}
                else:
                    per[c] = key
                held = dkeys.get(key)
                dkeys[key] = (r, c, payload) if held is None else entries.with_entry(held, r, c, payload)
        if self._deferred:
            d._add_deferred(self._deferred)
        return d

    def is_empty(self) -> bool:
        """True when no entry is visible (value is bottom), whatever the context remembers."""
        return not self._keys

    def is_bottom(self) -> bool:
        """True for the initial state: no entry, nothing observed, no deferred remove (a delta that does nothing)."""
        return not self._keys and not self._deferred and self._ctx.is_empty()

    def deferred_removes(self) -> int:
        """How many deferred removes wait for the dots they observed (see the module docstring)."""
        return len(self._deferred)

    def _entries(self) -> Iterator[tuple[Dot, K, Any]]:
        """All (dot, key, payload), sorted by dot: for encoding and debugging."""
        for r in sorted(self._dots):
            per = self._dots[r]
            for c in sorted(per):
                key = per[c]
                yield Dot(r, c), key, entries.payload_at(self._keys[key], r, c)

    def _entry_count(self) -> int:
        return sum(len(per) for per in self._dots.values())

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[K, Any]:
        """Validate (and rebuild) one decoded entry of ``replica``; raise ``ValueError``/``CRDTError`` if bad.

        Subclasses override this to enforce their entry shape (``crdt.encoding`` wraps errors in DecodeError).
        """
        return key, payload

    @classmethod
    def _key_from_wire(cls, key: Any) -> K:
        """A decoded key of a deferred remove, in the form the store keys its entries by."""
        hash(key)
        return key

    def copy(self) -> Self:
        new = type(self).__new__(type(self))
        new._keys = {k: entries.copied(kd) for k, kd in self._keys.items()}
        new._dots = {r: dict(per) for r, per in self._dots.items()}
        new._ctx = self._ctx.copy()
        new._deferred = _NO_DEFERRED
        if self._deferred:
            new._add_deferred(self._deferred)
        return new

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, DotKernel)
        mine, theirs = self._deferred, other._deferred
        return self._ctx == other._ctx and self._keys == other._keys and mine.keys() == theirs.keys() \
            and all(keys == theirs[i][1] for i, (_, keys) in mine.items())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._entries())!r}, {self._ctx!r})"
