"""Typed updates: parsing a request body into one, and applying one to a CRDT state (returning the delta).

An `Update` is a plain value usable from Python without HTTP (`node.update("k", Increment(amount=5))`). Every update
checks its own values when built (JSON data model, non-zero integer increments), so one made in Python cannot put a
value into a state that the encoding, the log or gossip would then refuse. Parsing validates the rest (unknown
fields, overlaps, the context) before any state is touched, so a rejected request changes nothing. `make_delta`
turns an update into the one delta that storage logs and replication gossips, without touching the state: the
keyspace encodes that delta before it merges it, so a write that fails leaves the state as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

from rumor.crdt import CausalContext, encode_context
from rumor.server.errors import InvalidOperationError, MalformedBodyError, UnknownFieldError
from rumor.server.hlc_source import HLCSource
from rumor.server.values import TYPES, canonical_json, check_json_value, check_text, decode_read_context, to_element


@dataclass(frozen=True, kw_only=True)
class Update:
    """Base of every update. `context` (from an earlier read) limits removes/overwrites to what that read saw."""

    type_name: ClassVar[str | None] = None
    context: CausalContext | None = None
    #: the (key, type) the context was read from (`values.context_binding`): a client's context is refused on any
    #: other key or type. None for a context made in Python, which is trusted as it is.
    context_binding: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class Increment(Update):
    type_name: ClassVar[str | None] = "counter"
    amount: int

    def __post_init__(self) -> None:
        if type(self.amount) is not int or self.amount == 0:
            raise InvalidOperationError("'increment' must be a non-zero integer")


@dataclass(frozen=True, kw_only=True)
class FoldOps(Update):
    """Folds a counter's op-keyed increments that are due into its plain count (`crdt.counter_ops`): made by the
    node itself (`server.op_folding`), never parsed from a request. The value stays the same."""

    type_name: ClassVar[str | None] = "counter"
    before_ms: int
    keep: int
    limit: int = 1000


@dataclass(frozen=True, kw_only=True)
class SetChange(Update):
    """Removes then adds (the two never overlap). Elements are JSON values."""

    type_name: ClassVar[str | None] = "set"
    add: tuple[Any, ...] = ()
    remove: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.add and not self.remove:
            raise InvalidOperationError("a set update adds or removes at least one element")
        for value in (*self.add, *self.remove):
            check_json_value(value)


@dataclass(frozen=True, kw_only=True)
class MapChange(Update):
    type_name: ClassVar[str | None] = "map"
    set: tuple[tuple[str, Any], ...] = ()
    remove: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.set and not self.remove:
            raise InvalidOperationError("a map update sets or removes at least one field")
        names = [name for name, _ in self.set] + list(self.remove)
        if not all(type(name) is str for name in names):
            raise InvalidOperationError("map field names must be strings")
        for name in names:
            check_text(name, "a map field name")
        if len(set(names)) != len(names):
            raise InvalidOperationError("a map update names each field once")
        for _, value in self.set:
            check_json_value(value)


@dataclass(frozen=True, kw_only=True)
class RegisterWrite(Update):
    """Last-writer-wins register write, ordered by the node's HLC."""

    type_name: ClassVar[str | None] = "register"
    value: Any

    def __post_init__(self) -> None:
        check_json_value(self.value)


@dataclass(frozen=True, kw_only=True)
class MVRegisterWrite(Update):
    """Multi-value register write: concurrent writes are all kept as siblings."""

    type_name: ClassVar[str | None] = "mvregister"
    value: Any

    def __post_init__(self) -> None:
        check_json_value(self.value)


@dataclass(frozen=True, kw_only=True)
class Clear(Update):
    """Observed-remove of the whole key (`DELETE`): works on any type; concurrent updates survive."""


_FIELDS: dict[str, frozenset[str]] = {
    "counter": frozenset({"increment"}),
    "set": frozenset({"add", "remove"}),
    "map": frozenset({"set", "remove"}),
    "register": frozenset({"value"}),
    "mvregister": frozenset({"value"}),
}
_COMMON = frozenset({"type", "context"})


def parse_context(raw: Any) -> dict[str, Any]:
    """A client's opaque context string -> the `context` and `context_binding` fields of an Update (empty: none)."""
    if raw is None:
        return {}
    read = decode_read_context(raw)
    return {"context": read.context, "context_binding": read.binding}


def _unique(values: list[Any], what: str) -> tuple[Any, ...]:
    seen: dict[Any, Any] = {}
    for value in values:
        seen.setdefault(to_element(value), value)
    return tuple(seen.values())


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise InvalidOperationError(f"{name!r} must be a list")
    return value


def parse_update(body: Any) -> Update:
    """A POST body -> its update. Raises a BadRequestError subclass for anything invalid."""
    if not isinstance(body, dict):
        raise MalformedBodyError("the body must be an object like {\"type\": \"counter\", \"increment\": 1}")
    type_name = body.get("type")
    if not isinstance(type_name, str) or type_name not in _FIELDS:
        raise InvalidOperationError(f"'type' must be one of {', '.join(sorted(_FIELDS))}")
    unknown = set(body) - _COMMON - _FIELDS[type_name]
    if unknown:
        raise UnknownFieldError(sorted(unknown), hint=OP_ID_HINT if "op_id" in unknown else None)
    if not set(body) & _FIELDS[type_name]:
        raise InvalidOperationError(f"a {type_name} update needs {' or '.join(sorted(_FIELDS[type_name]))}")
    context = parse_context(body.get("context"))
    if type_name == "counter":
        return Increment(amount=body["increment"], **context)
    if type_name == "set":
        add, remove = _unique(_list(body, "add"), "add"), _unique(_list(body, "remove"), "remove")
        both = {to_element(v) for v in add} & {to_element(v) for v in remove}
        if both:
            raise InvalidOperationError("an element cannot be both added and removed in one update")
        return SetChange(add=add, remove=remove, **context)
    if type_name == "map":
        fields = body.get("set", {})
        if not isinstance(fields, dict):
            raise InvalidOperationError("'set' must be an object of field -> value")
        removed = _list(body, "remove")
        if not all(isinstance(name, str) for name in removed):
            raise InvalidOperationError("'remove' must list field names (strings)")
        if set(fields) & set(removed):
            raise InvalidOperationError("a field cannot be both set and removed in one update")
        return MapChange(set=tuple(sorted(fields.items())), remove=tuple(dict.fromkeys(removed)), **context)
    if type_name == "register":
        return RegisterWrite(value=body["value"], **context)
    return MVRegisterWrite(value=body["value"], **context)


OP_ID_HINT = "an op_id goes in the Idempotency-Key header"


def request_fingerprint(key: str, update: Update) -> str:
    """What makes two requests the same request, for op_id reuse: the key, the kind of update and all its fields.

    Canonical JSON, so a retry whose client re-serialized the body in another order is still the same request.
    """
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(update):
        value = getattr(update, f.name)
        if isinstance(value, CausalContext):
            value = encode_context(value).hex()
        elif isinstance(value, bytes):
            value = value.hex()
        fields[f.name] = value
    text = canonical_json([key, type(update).__name__, fields])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def new_state(type_name: str) -> Any:
    return TYPES[type_name]()


def make_delta(state: Any, update: Update, replica: str, hlc: HLCSource, op_id: str | None = None) -> Any:
    """The delta that applies `update` to `state`, made without changing `state` (crdt mutators only read).

    An increment made with an `op_id` is keyed by it (`crdt.counter_ops`): applied on several nodes (a retry that
    timed out on one and went to another), it still counts once.

    An update of several steps (a set's removes and adds, a map's removes and field writes) is made as one delta:
    its steps touch distinct elements or fields, and the multi-write mutators hand out consecutive dots, so no step
    needs to see the state after the one before. That lets the caller encode the delta (proving it storable and
    gossipable) before anything changes.
    """
    ctx = update.context
    if isinstance(update, RegisterWrite):  # the commonest of all
        return state.write(replica, update.value, hlc.now(after=state.timestamp()), ctx)
    if isinstance(update, Increment):
        if op_id is not None:
            return state.increment_op(replica, op_id, update.amount, max(0, hlc.physical_ms()))
        return state.increment(replica, update.amount)
    if isinstance(update, FoldOps):
        return state.fold_ops(replica, update.before_ms, update.keep, update.limit)
    if isinstance(update, MVRegisterWrite):
        return state.write(replica, update.value, ctx)
    if isinstance(update, Clear):
        return state.clear(ctx)
    if isinstance(update, SetChange):
        steps = [state.remove_all([to_element(v) for v in update.remove], ctx) if update.remove else None,
                 state.add_all(replica, [to_element(v) for v in update.add]) if update.add else None]
    elif isinstance(update, MapChange):
        stamp = None
        if update.set:
            for name, _ in update.set:  # a field write sorts after the value it overwrites, like a register write
                version = state.field_versions(name)
                hlc.observe(None if version is None else version.timestamp)
            stamp = hlc.now()
        steps = [state.remove_all(update.remove, ctx) if update.remove else None,
                 state.set_all(replica, update.set, stamp, ctx) if stamp is not None else None]
    else:
        raise InvalidOperationError(f"unknown update {type(update).__name__}")
    made = [step for step in steps if step is not None]
    delta = made[0]
    for step in made[1:]:
        delta.merge(step)
    return delta
