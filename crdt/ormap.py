"""Observed-remove map of keys to nested CRDTs (any type, ORMap included), with reset-remove semantics.

Store shape (Almeida, Shoker, Baquero 2018, "ORMap"): ``DotMap<key, nested dot store>`` under ONE causal context
shared with every nested value. Nested values draw their dots from that shared context, so a dot is unique across
the whole map and a remove can name exactly the events it observed, at any depth.

Representation: the shared kernel's flat form. Every dot of a nested value is stored under the composite key
``(key, kind TYPE_NAME, nested key)`` with the nested payload; a nested ORMap's own keys are composite, so depth
just nests tuples. Because every dot belongs to exactly one key, the kernel's flat join IS the nested DotMap
join: there is no ORMap-specific join, and merging a delta costs O(size of the delta) like every other type. An
``_index`` (key -> kind -> nested keys, kept exact by the kernel's insert/discard hooks) finds a key's entries
without a scan, and ``update`` hands ``mutate`` a read-only view of them rather than a copy, so producing a
delta costs O(delta) too (a nested ORMap is the exception: its own index is rebuilt, O(that nested map)).

Semantics of ``remove(key)`` (observed reset, as in Riak's ``riak_dt_map``): the delta covers exactly the dots of
the key's entries that the remover observed (limited further by ``context`` when given) and nothing else.

* An update concurrent with the remove carries dots the remove never saw, so the key stays (add wins) holding
  only those concurrent effects; everything the remover observed is reset. For an ORSet: only the elements added
  concurrently remain; for registers and LWWMap fields: only the concurrent writes; for a nested ORMap: the same
  rule, recursively.
* Counters (GCounter, PNCounter) keep one entry per replica holding that replica's running total. A concurrent
  increment therefore carries its replica's whole total, so that replica's pre-remove contribution survives with
  it, while the observed contributions of other replicas are reset. This is Riak's embedded-counter behaviour
  (riak_dt issue #98); with no concurrent increment the counter is gone entirely.
* An update that causally follows the remove starts from the empty value.

Kinds: a key is bound to the kind of its live entries. Using it with another kind raises ``TypeMismatchError``;
once all its entries are removed it may be rebound. If two replicas bind one key to different kinds concurrently,
both are kept (as Riak keys fields by name and type); reads show the kind whose ``TYPE_NAME`` sorts first,
``kinds(key)`` lists all, either may be updated, and ``remove(key)`` resets all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Self, TypeVar

from rumor.crdt.causal_context import CausalContext
from rumor.crdt.dot_kernel import DotKernel, DotT
from rumor.crdt.entries import Entries, dots, items
from rumor.crdt.errors import InvalidOperationError, TypeMismatchError
from rumor.crdt.fast_merge import apply_write
from rumor.crdt.registry import TYPES, register_type

T = TypeVar("T", bound=DotKernel[Any])
#: an entry's key in the map's flat store: (map key, nested kind's TYPE_NAME, nested key)
FlatKey = tuple[str, str, Hashable]


class _NestedEntries(Mapping[Hashable, Any]):
    """Read-only window onto one key's entries in the parent's flat store: nested key -> its entries (the tuple of
    one, or a read-only view of the dict of several: ``crdt.entries``).

    Handing ``mutate`` (and ``value``) this window instead of a copy makes an update cost O(its delta), not
    O(size of the nested value). Writes are impossible through it (no ``__setitem__``, payload dicts behind
    ``MappingProxyType``), so a stray ``merge`` on the nested value fails instead of corrupting the map.
    """

    __slots__ = ("_flat", "_inners", "_key", "_name")

    def __init__(self, flat: dict[FlatKey, Entries], key: str, name: str, inners: set[Hashable]) -> None:
        self._flat = flat
        self._key = key
        self._name = name
        self._inners = inners

    def __getitem__(self, inner: Hashable) -> Any:
        if inner not in self._inners:
            raise KeyError(inner)
        return _read_only(self._flat[(self._key, self._name, inner)])

    def get(self, inner: Hashable, default: Any = None) -> Any:
        if inner in self._inners:
            return _read_only(self._flat[(self._key, self._name, inner)])
        return default

    def __contains__(self, inner: object) -> bool:
        return inner in self._inners

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._inners)

    def __len__(self) -> int:
        return len(self._inners)


def _read_only(kd: Entries) -> Any:
    return kd if isinstance(kd, tuple) else MappingProxyType(kd)


class _NestedDots(Mapping[str, Mapping[int, Hashable]]):
    """The nested value's replica -> {counter: nested key} index, built only if something asks (copy, repr)."""

    __slots__ = ("_built", "_entries")

    def __init__(self, entries: _NestedEntries) -> None:
        self._entries = entries
        self._built: dict[str, Mapping[int, Hashable]] | None = None

    def _index(self) -> dict[str, Mapping[int, Hashable]]:
        if self._built is None:
            per: dict[str, dict[int, Hashable]] = {}
            for inner, kd in self._entries.items():
                for r, c in dots(kd):
                    per.setdefault(r, {})[c] = inner
            self._built = {r: MappingProxyType(cs) for r, cs in per.items()}
        return self._built

    def __getitem__(self, replica: str) -> Mapping[int, Hashable]:
        return self._index()[replica]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())


@register_type
class ORMap(DotKernel[FlatKey]):
    """Keys (str) -> nested CRDTs. Mutators return deltas; apply them (local or remote) with ``merge``."""

    __slots__ = ("_index",)

    TYPE_NAME: ClassVar[str] = "ormap"

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[str, dict[str, set[Hashable]]] = {}

    # -- kernel hooks: keep the key index exact whichever path adds or drops an entry -------------------------
    @classmethod
    def _bound_to(cls, ctx: CausalContext) -> Self:
        new = super()._bound_to(ctx)
        new._index = {}
        return new

    def _insert(self, dot: DotT, key: FlatKey, payload: Any) -> None:
        super()._insert(dot, key, payload)
        self._index_key(key)

    def _discard(self, r: str, c: int) -> None:
        key = self._dots[r][c]
        super()._discard(r, c)
        if key not in self._keys:
            k, name, inner = key
            kinds = self._index[k]
            inners = kinds[name]
            inners.discard(inner)
            if not inners:
                del kinds[name]
                if not kinds:
                    del self._index[k]

    def _index_key(self, key: FlatKey) -> None:
        k, name, inner = key
        kinds = self._index.get(k)
        if kinds is None:
            self._index[k] = {name: {inner}}
        else:
            inners = kinds.get(name)
            if inners is None:
                kinds[name] = {inner}
            else:
                inners.add(inner)

    _DEFERS_REMOVES: ClassVar[bool] = False  # its merge joins nested stores directly (see DotKernel's docstring)
    _KEYS_INDEXED: ClassVar[bool] = True

    def merge(self, other: Self) -> None:
        """Join in place: the kernel's join, then index what arrived. O(size of ``other``)."""
        if type(other) is not type(self):
            raise TypeMismatchError(self.TYPE_NAME, getattr(other, "TYPE_NAME", type(other).__name__))
        # a one-key update, the commonest: crdt.fast_merge (its _discard indexes; no entry replaced behind it)
        if not apply_write(self, other, False):
            self._join_store(other)
            self._ctx.merge(other._ctx)
        keys = self._keys
        for key in other._keys:
            if key in keys:
                self._index_key(key)

    def copy(self) -> Self:
        new = super().copy()
        new._index = {k: {name: set(inners) for name, inners in kinds.items()} for k, kinds in self._index.items()}
        return new

    @classmethod
    def _entry_from_wire(cls, replica: str, key: Any, payload: Any) -> tuple[FlatKey, Any]:
        """A decoded entry is ``(key, kind, nested key)``: validate the shape, then let the kind check the rest."""
        if type(key) is not tuple or len(key) != 3 or type(key[0]) is not str or key[1] not in TYPES:
            raise ValueError("ORMap entries are keyed (str key, embeddable TYPE_NAME, nested key)")
        inner, payload = TYPES[key[1]]._entry_from_wire(replica, key[2], payload)
        return (key[0], key[1], inner), payload

    # -- delta mutators ---------------------------------------------------------------------------------------
    def update(self, replica: str, key: str, kind: type[T], mutate: Callable[[T], T]) -> ORMap:
        """Delta applying one nested mutation to ``key``'s value of type ``kind`` (empty if the key is absent).

        ``mutate`` receives the current nested value, a read-only view valid during the call, over a snapshot
        of this map's context (so its mutators draw map-wide unique dots), and must return the delta made by one
        of that value's mutators. Cost O(delta) for every kind but ORMap, whose nested index is rebuilt
        (O(that nested map)). The returned ORMap delta holds only that key's entries.
        """
        if not isinstance(key, str):
            raise InvalidOperationError(f"ORMap keys must be str, got {type(key).__name__}")
        name = getattr(kind, "TYPE_NAME", None)
        if not isinstance(name, str) or TYPES.get(name) is not kind:
            raise InvalidOperationError(f"{kind!r} is not an embeddable CRDT type")
        bound = self._index.get(key)
        if bound and name not in bound:
            raise TypeMismatchError(min(bound), name)
        ctx = self._ctx.copy()
        current = self._view(key, kind, ctx) if bound else kind._bound_to(ctx)
        nested_delta = mutate(current)
        if type(nested_delta) is not kind:
            raise TypeMismatchError(name, getattr(nested_delta, "TYPE_NAME", type(nested_delta).__name__))
        dctx = nested_delta._ctx
        if dctx is ctx:
            raise InvalidOperationError("mutate must return a delta from one of the nested value's mutators")
        self._check_scope(replica, key, name, dctx)
        delta = ORMap._bound_to(dctx.copy())
        for inner, kd in nested_delta._keys.items():
            flat = (key, name, inner)
            for dot, payload in items(kd):
                delta._insert(dot, flat, payload)
        return delta

    def _check_scope(self, replica: str, key: str, name: str, dctx: CausalContext) -> None:
        """A nested delta may only cover dots of that nested value, plus fresh dots of ``replica``.

        Anything wider (e.g. a whole nested state, whose context is the map's) would, once merged, remove
        other keys' entries; refuse it rather than corrupt the map. Cost O(dots in the delta's context).
        """
        sctx = self._ctx
        sdots = self._dots
        for dot in dctx.dots():
            r, c = dot
            if not sctx.contains(dot):
                if r != replica:
                    raise InvalidOperationError(f"nested delta made a dot for {r!r}, update was for {replica!r}")
                continue
            flat = sdots.get(r, {}).get(c)
            if flat is None or flat[0] != key or flat[1] != name:
                raise InvalidOperationError(f"nested delta for key {key!r} covers dot {dot} outside that value")

    def remove(self, key: str, context: CausalContext | None = None) -> ORMap:
        """Observed-reset of ``key`` (every kind bound to it), limited to ``context`` when given."""
        kinds = self._index.get(key)
        if not kinds:
            return ORMap()
        return self._remove_delta(
            [(key, name, inner) for name, inners in kinds.items() for inner in inners], context
        )

    # -- reads ------------------------------------------------------------------------------------------------
    def _nested(self, key: str, kind: type[T], ctx: CausalContext) -> T:
        """The nested value of ``key`` as ``kind``, built from its entries over ``ctx``."""
        name = kind.TYPE_NAME
        nested = kind._bound_to(ctx)
        keys = self._keys
        for inner in self._index[key][name]:
            for dot, payload in items(keys[(key, name, inner)]):
                nested._insert(dot, inner, payload)
        return nested

    def _view(self, key: str, kind: type[T], ctx: CausalContext) -> T:
        """The nested value of ``key`` as ``kind`` without copying its entries (read-only; see above)."""
        if kind is ORMap:  # a nested map needs its own key index: materialize
            return self._nested(key, kind, ctx)
        name = kind.TYPE_NAME
        nested = kind._bound_to(ctx)
        entries = _NestedEntries(self._keys, key, name, self._index[key][name])
        # The read-only windows stand in for the store's dicts: every kernel read works on a Mapping; a write
        # fails loudly on them, which is the point (see _NestedEntries).
        nested._keys = entries  # type: ignore[assignment]
        nested._dots = _NestedDots(entries)  # type: ignore[assignment]
        return nested

    def get(self, key: str) -> Any | None:
        """An independent copy of ``key``'s nested value (the first kind by name if bound to several), or None."""
        kinds = self._index.get(key)
        if not kinds:
            return None
        return self._nested(key, TYPES[min(kinds)], self._ctx.copy())

    def kinds(self, key: str) -> list[type[DotKernel[Any]]]:
        """The kinds ``key`` is bound to, sorted by ``TYPE_NAME`` (several only after concurrent bindings)."""
        return [TYPES[name] for name in sorted(self._index.get(key, ()))]

    def value(self) -> dict[str, Any]:
        """``{key: nested value()}``, sorted by key."""
        index = self._index
        ctx = self._ctx  # read-only use: nested values built here never escape
        return {k: self._view(k, TYPES[min(index[k])], ctx).value() for k in sorted(index)}

    def keys(self) -> list[str]:
        """Present keys, sorted."""
        return sorted(self._index)

    def entry_count(self) -> int:
        """Number of dot-tagged entries stored, at every depth (a delta's size measure)."""
        return self._entry_count()

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

