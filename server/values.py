"""The mapping between the API's JSON data model and crdt's plain data: values, set elements, contexts, type names.

- Values are the JSON data model (null, bool, int, float, str, list, object with str keys), checked once here so
  the msgpack and JSON paths accept exactly the same things and nothing deeper than `MAX_DEPTH` reaches crdt encoding.
- Set elements must be hashable. Strings and integers are used as they are (the common case costs nothing); every
  other value becomes `("json", canonical JSON text)`. That keeps `true` apart from `1` and `1.0` apart from `1`
  (all equal in Python) and makes lists/objects hashable; converting back is `json.loads`.
- Sets are shown sorted by `json_sort_key`: null < booleans < numbers < strings < lists < objects, deterministic
  across nodes.
- The read context is opaque to clients: base64url of `crdt.encode_context`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

from rumor.crdt import (
    CausalContext,
    CRDTError,
    LWWMap,
    LWWRegister,
    MVRegister,
    ORSet,
    PNCounter,
    decode_context,
    encode_context,
    encode_state_context,
)
from rumor.server.errors import BadContextError, InvalidKeyError, InvalidOptionError, InvalidValueError

MAX_DEPTH = 24
MAX_KEY_BYTES = 1024

#: API type name -> crdt class. The API names are what clients write; crdt's TYPE_NAME stays internal.
TYPES: dict[str, type] = {
    "register": LWWRegister,
    "mvregister": MVRegister,
    "counter": PNCounter,
    "set": ORSet,
    "map": LWWMap,
}

_JSON_TAG = "json"


def check_key(key: str) -> str:
    if key.isascii() and 0 < len(key) <= MAX_KEY_BYTES:  # the common case: one byte a character, valid UTF-8
        return key
    size = len(key.encode("utf-8", "surrogatepass"))
    if size == 0:
        raise InvalidKeyError(key, "empty")
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(key, f"{size} bytes, over {MAX_KEY_BYTES}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(key, "not valid UTF-8") from exc
    return key


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_OP_ID_CHARS = 256


def check_text(text: str, what: str) -> str:
    """Strings the store keeps are valid Unicode: JSON's `\\ud800` escape decodes to a lone surrogate, which no
    UTF-8 encoder (msgpack, SQLite, the JSON we answer with) can write, so it is refused where it enters."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValueError(f"{what} holds a lone surrogate, not valid Unicode: {text[:40]!a}") from None
    return text


def check_json_value(value: Any, depth: int = 0, *, int64: bool = True) -> Any:
    """Raises InvalidValueError unless `value` is in the JSON data model, valid Unicode throughout, at most
    MAX_DEPTH deep, and (with `int64`, for stored values) its integers fit the signed 64-bit range.

    Why 64 bits: every JSON client can round-trip them as strings or BigInt, and most languages' integer types hold
    them; counter increments are checked apart (any size: a counter is an integer, not a value). Exact type checks
    (decoders only ever build these types): this runs on every write.
    """
    t = type(value)
    if t is str:
        return value if value.isascii() else check_text(value, "a string")
    if t is int:
        if int64 and not INT64_MIN <= value <= INT64_MAX:
            raise InvalidValueError(f"integer {value if abs(value) < 10**30 else 'of this size'} is outside the "
                                    "signed 64-bit range of stored values")
        return value
    if t is bool or value is None:
        return value
    # the deepest member sits at depth MAX_DEPTH: a container there must be empty
    if depth > MAX_DEPTH or (depth == MAX_DEPTH and (t is list or t is dict) and value):
        raise InvalidValueError(f"value nested deeper than {MAX_DEPTH} levels")
    if t is float:
        if not math.isfinite(value):
            raise InvalidValueError("NaN and infinities are not JSON numbers")
        return value
    if t is list:
        for item in value:
            check_json_value(item, depth + 1, int64=int64)
        return value
    if t is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise InvalidValueError("object keys must be strings")
            if not name.isascii():
                check_text(name, "an object key")
            check_json_value(item, depth + 1, int64=int64)
        return value
    raise InvalidValueError(f"{t.__name__} is not a JSON value")


def check_op_id(raw: Any) -> str:
    """An op_id (the `Idempotency-Key` header) is 1..MAX_OP_ID_CHARS visible ASCII characters: it is logged, stored
    and compared as it is, so nothing invisible or ambiguous may hide in it."""
    if type(raw) is not str or not 0 < len(raw) <= MAX_OP_ID_CHARS or not raw.isascii() or not raw.isprintable() \
            or " " in raw:
        raise InvalidOptionError(f"an op_id (Idempotency-Key) is 1..{MAX_OP_ID_CHARS} visible ASCII characters")
    return raw


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def to_element(value: Any) -> Any:
    """JSON value -> hashable ORSet element (see module docstring)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return (_JSON_TAG, canonical_json(value))


def from_element(element: Any) -> Any:
    if isinstance(element, tuple) and len(element) == 2 and element[0] == _JSON_TAG:
        return json.loads(element[1])
    return element


def json_sort_key(value: Any) -> tuple[int, Any, str]:
    """Total order over JSON values: by kind, then naturally within the kind, then by canonical text."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, bool):
        return (1, int(value), "")
    if type(value) is int:  # json writes an int as its repr: the same text, without an encoder a value
        return (2, value, int.__repr__(value))
    if isinstance(value, int | float):
        return (2, value, canonical_json(value))
    if isinstance(value, str):
        return (3, value, "")
    text = canonical_json(value)
    return (4 if isinstance(value, list) else 5, text, text)


def sorted_json(values: Iterable[Any]) -> list[Any]:
    """``values`` in `json_sort_key` order. For values all plain ints or all strings (a set's usual case) their
    natural order is that order, ties included (both sorts are stable), so they are sorted without a key a value:
    the keys of a million-element set cost two seconds of the event loop."""
    items = list(values)
    return _sorted_in_place(items, set(map(type, items)))


def _sorted_in_place(items: list[Any], kinds: set[type]) -> list[Any]:
    """`sorted_json` of ``items``, whose value types are ``kinds``."""
    if len(kinds) == 1 and (int in kinds or str in kinds):
        items.sort()
    else:
        items.sort(key=json_sort_key)
    return items


def render_value(type_name: str, state: Any) -> Any:
    """The JSON shape a read shows for a state of `type_name`."""
    if type_name == "set":
        elements = list(state.value())
        kinds = set(map(type, elements))
        if tuple in kinds:  # some element is JSON text: plain ints and strings show as they are
            return sorted_json(map(from_element, elements))
        return _sorted_in_place(elements, kinds)
    if type_name == "map":
        return dict(state.value())
    if type_name == "mvregister":
        return list(state.value())
    return state.value()


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_CONTEXT_VERSION = 1
_BINDING_BYTES = 8


class ReadContext(NamedTuple):
    """A decoded read context: what the read saw, and the key and type it was read from (`binding`)."""

    binding: bytes
    context: CausalContext


def context_binding(key: str, type_name: str) -> bytes:
    """8 bytes naming (key, type): a context handed back with an update must come from a read of that same key and
    type, or a remove on key B would remove B's elements whose dots a read of key A happened to cover."""
    return hashlib.blake2b(f"{type_name}\0{key}".encode(), digest_size=_BINDING_BYTES).digest()


def encode_read_context(binding: bytes, context: CausalContext) -> str:
    return _read_context_text(binding, encode_context(context))


def read_context_of(binding: bytes, state: Any) -> str:
    """`encode_read_context(binding, state.context())` without copying the context: every write renders one."""
    return _read_context_text(binding, encode_state_context(state))


def _read_context_text(binding: bytes, data: bytes) -> str:
    # version byte, binding, context bytes; base64url without padding, with binascii directly (what
    # base64.urlsafe_b64encode wraps, with more Python around it)
    raw = bytes((_CONTEXT_VERSION,)) + binding + data
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def decode_read_context(text: Any) -> ReadContext:
    if not isinstance(text, str) or not text.isascii():
        raise BadContextError("context must be the string returned by a read")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadContextError(f"context does not decode: {exc}") from exc
    if len(raw) <= _BINDING_BYTES or raw[0] != _CONTEXT_VERSION:
        raise BadContextError("context is not one this version returns: read the key again and pass that context")
    try:
        return ReadContext(raw[1:1 + _BINDING_BYTES], decode_context(raw[1 + _BINDING_BYTES:]))
    except (ValueError, CRDTError) as exc:
        raise BadContextError(f"context does not decode: {exc}") from exc


def check_binding(key: str, type_name: str, binding: bytes | None) -> None:
    """Refuses a context read from another key or type (None: a context made in Python, trusted as it is)."""
    if binding is not None and binding != context_binding(key, type_name):
        raise BadContextError(f"context was read from another key or type, not from this {type_name} {key!r}: "
                              "pass the context of a read of this key")
