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
import json
import math
from collections.abc import Iterable
from typing import Any

from crdt import (
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
from server.errors import BadContextError, InvalidKeyError, MalformedBodyError

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


_JSON_SCALARS = frozenset({type(None), bool, int, str})


def check_json_value(value: Any, depth: int = 0) -> Any:
    """Raises MalformedBodyError unless `value` is in the JSON data model and at most MAX_DEPTH deep.

    Exact type checks (decoders only ever build these types), members tested inline: this runs on every write.
    """
    t = type(value)
    if t in _JSON_SCALARS:
        return value
    # the deepest member sits at depth MAX_DEPTH: a container there must be empty
    if depth > MAX_DEPTH or (depth == MAX_DEPTH and (t is list or t is dict) and value):
        raise MalformedBodyError(f"value nested deeper than {MAX_DEPTH} levels")
    if t is float:
        if not math.isfinite(value):
            raise MalformedBodyError("NaN and infinities are not JSON numbers")
        return value
    if t is list:
        for item in value:
            if type(item) not in _JSON_SCALARS:
                check_json_value(item, depth + 1)
        return value
    if t is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise MalformedBodyError("object keys must be strings")
            if type(item) not in _JSON_SCALARS:
                check_json_value(item, depth + 1)
        return value
    raise MalformedBodyError(f"{t.__name__} is not a JSON value")


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
    if isinstance(value, int | float):
        return (2, value, canonical_json(value))
    if isinstance(value, str):
        return (3, value, "")
    text = canonical_json(value)
    return (4 if isinstance(value, list) else 5, text, text)


def sorted_json(values: Iterable[Any]) -> list[Any]:
    return sorted(values, key=json_sort_key)


def render_value(type_name: str, state: Any) -> Any:
    """The JSON shape a read shows for a state of `type_name`."""
    if type_name == "set":
        return sorted_json(from_element(e) for e in state.value())
    if type_name == "map":
        return dict(state.value())
    if type_name == "mvregister":
        return list(state.value())
    return state.value()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def encode_read_context(context: CausalContext) -> str:
    return _read_context_text(encode_context(context))


def read_context_of(state: Any) -> str:
    """`encode_read_context(state.context())` without copying the context: a write renders it for its answer."""
    return _read_context_text(encode_state_context(state))


def _read_context_text(data: bytes) -> str:
    # base64url without padding; binascii directly (what base64.urlsafe_b64encode wraps, with more Python around it)
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def decode_read_context(text: Any) -> CausalContext:
    if not isinstance(text, str):
        raise BadContextError("context must be the string returned by a read")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        return decode_context(raw)
    except (binascii.Error, ValueError, CRDTError) as exc:
        raise BadContextError(f"context does not decode: {exc}") from exc
