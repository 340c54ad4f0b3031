"""Typed updates: parsing a request body into one, and applying one to a CRDT state (returning the delta).

An `Update` is a plain value usable from Python without HTTP (`node.update("k", Increment(amount=5))`). Every update
checks its own values when built (JSON data model, non-zero integer increments), so one made in Python cannot put a
value into a state that the encoding, the log or gossip would then refuse. Parsing validates the rest (unknown
fields, overlaps, the context) before any state is touched, so a rejected request changes nothing. Applying follows
the crdt rule "generate a delta, merge it, then generate the next", and returns the join of the deltas it made: that
one delta is what storage logs and replication gossips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from crdt import CausalContext
from server.errors import InvalidOperationError, MalformedBodyError, UnknownFieldError
from server.hlc_source import HLCSource
from server.values import TYPES, check_json_value, decode_read_context, to_element

MAX_OP_ID_CHARS = 256


@dataclass(frozen=True, kw_only=True)
class Update:
    """Base of every update. `context` (from an earlier read) limits removes/overwrites to what that read saw."""

    type_name: ClassVar[str | None] = None
    context: CausalContext | None = None


@dataclass(frozen=True, kw_only=True)
class Increment(Update):
    type_name: ClassVar[str | None] = "counter"
    amount: int

    def __post_init__(self) -> None:
        if type(self.amount) is not int or self.amount == 0:
            raise InvalidOperationError("'increment' must be a non-zero integer")


@dataclass(frozen=True, kw_only=True)
class SetChange(Update):
    """Removes then adds (the two never overlap). Elements are JSON values."""

    type_name: ClassVar[str | None] = "set"
    add: tuple[Any, ...] = ()
    remove: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        for value in (*self.add, *self.remove):
            check_json_value(value)


@dataclass(frozen=True, kw_only=True)
class MapChange(Update):
    type_name: ClassVar[str | None] = "map"
    set: tuple[tuple[str, Any], ...] = ()
    remove: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not all(type(name) is str for name, _ in self.set) or not all(type(name) is str for name in self.remove):
            raise InvalidOperationError("map field names must be strings")
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
_COMMON = frozenset({"type", "context", "op_id"})


def parse_op_id(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not (0 < len(raw) <= MAX_OP_ID_CHARS):
        raise InvalidOperationError(f"op_id must be a string of 1..{MAX_OP_ID_CHARS} characters")
    return raw


def parse_context(raw: Any) -> CausalContext | None:
    return None if raw is None else decode_read_context(raw)


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


def parse_update(body: Any) -> tuple[Update, str | None]:
    """A POST body -> (update, op_id). Raises a BadRequestError subclass for anything invalid."""
    if not isinstance(body, dict):
        raise MalformedBodyError("the body must be an object like {\"type\": \"counter\", \"increment\": 1}")
    type_name = body.get("type")
    if not isinstance(type_name, str) or type_name not in _FIELDS:
        raise InvalidOperationError(f"'type' must be one of {', '.join(sorted(_FIELDS))}")
    unknown = set(body) - _COMMON - _FIELDS[type_name]
    if unknown:
        raise UnknownFieldError(sorted(unknown))
    if not set(body) & _FIELDS[type_name]:
        raise InvalidOperationError(f"a {type_name} update needs {' or '.join(sorted(_FIELDS[type_name]))}")
    op_id = parse_op_id(body.get("op_id"))
    context = parse_context(body.get("context"))
    update: Update
    if type_name == "counter":
        update = Increment(amount=body["increment"], context=context)
    elif type_name == "set":
        add, remove = _unique(_list(body, "add"), "add"), _unique(_list(body, "remove"), "remove")
        both = {to_element(v) for v in add} & {to_element(v) for v in remove}
        if both:
            raise InvalidOperationError("an element cannot be both added and removed in one update")
        update = SetChange(add=add, remove=remove, context=context)
    elif type_name == "map":
        fields = body.get("set", {})
        if not isinstance(fields, dict):
            raise InvalidOperationError("'set' must be an object of field -> value")
        removed = _list(body, "remove")
        if not all(isinstance(name, str) for name in removed):
            raise InvalidOperationError("'remove' must list field names (strings)")
        if set(fields) & set(removed):
            raise InvalidOperationError("a field cannot be both set and removed in one update")
        update = MapChange(set=tuple(sorted(fields.items())), remove=tuple(dict.fromkeys(removed)), context=context)
    elif type_name == "register":
        update = RegisterWrite(value=body["value"], context=context)
    else:
        update = MVRegisterWrite(value=body["value"], context=context)
    return update, op_id


def new_state(type_name: str) -> Any:
    return TYPES[type_name]()


def apply_update(state: Any, update: Update, replica: str, hlc: HLCSource) -> Any:
    """Mutates `state` in place by `update` and returns the delta that did it (the join of each mutator's delta).

    Merging a delta into the state shares nothing with it, so a one-step update returns its delta as is; only an
    update of several steps copies the first before joining the rest into it.
    """
    ctx = update.context
    # one-step updates first (a register write is the commonest of all): their delta is the answer as it is
    if isinstance(update, RegisterWrite):
        return _merged(state, state.write(replica, update.value, hlc.now(after=state.timestamp()), ctx))
    if isinstance(update, Increment):
        return _merged(state, state.increment(replica, update.amount))
    if isinstance(update, MVRegisterWrite):
        return _merged(state, state.write(replica, update.value, ctx))
    if isinstance(update, Clear):
        return _merged(state, state.clear(ctx))
    deltas: list[Any] = []

    def step(delta: Any) -> None:
        state.merge(delta)
        deltas.append(delta)

    if isinstance(update, SetChange):
        if update.remove:
            step(state.remove_all([to_element(v) for v in update.remove], ctx))
        if update.add:
            step(state.add_all(replica, [to_element(v) for v in update.add]))
    elif isinstance(update, MapChange):
        for name in update.remove:
            step(state.remove(name, ctx))
        if update.set:
            for name, _ in update.set:  # a field write sorts after the value it overwrites, like a register write
                version = state.field_versions(name)
                hlc.observe(None if version is None else version.timestamp)
            stamp = hlc.now()
            for name, value in update.set:
                step(state.set(replica, name, value, stamp, ctx))
    else:
        raise InvalidOperationError(f"unknown update {type(update).__name__}")
    if not deltas:
        return type(state)()
    total = deltas[0] if len(deltas) == 1 else deltas[0].copy()
    for delta in deltas[1:]:
        total.merge(delta)
    return total


def _merged(state: Any, delta: Any) -> Any:
    state.merge(delta)
    return delta
