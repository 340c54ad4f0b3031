"""The HTTP request edge: a key from the path, query options, integer options and the op_id header, each read once
and checked against one definition (`server.values`) before a handler calls the node.

Why the raw request target and not aiohttp's decoded views: aiohttp (through yarl) leaves an escape that does not
decode to UTF-8 in the text as it is (`/v1/kv/bad%FFkey` becomes the key `bad%FFkey`, the same key as
`bad%25FFkey`) and turns one in a query into U+FFFD. Here a key or an option is percent-decoded strictly: a `%` must
be followed by two hex digits and the bytes must be UTF-8, or the request gets a 400 naming what is wrong.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from aiohttp import web

from rumor.server.errors import InvalidKeyError, InvalidOptionError
from rumor.server.updates import OP_ID_HINT
from rumor.server.values import check_key, check_op_id

KV_PREFIX = "/v1/kv/"
IDEMPOTENCY_HEADER = "Idempotency-Key"  # named in updates.OP_ID_HINT too
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_OPTION_HINTS = {"op_id": OP_ID_HINT}


class _DecodeError(ValueError):
    pass


def percent_decode(raw: str, *, plus_is_space: bool = False) -> str:
    """Strict percent-decoding: raises `_DecodeError` for a bad escape or bytes that are not UTF-8."""
    if "%" not in raw and raw.isascii():
        return raw.replace("+", " ") if plus_is_space else raw
    if _BAD_ESCAPE.search(raw):
        raise _DecodeError("'%' not followed by two hex digits")
    if plus_is_space:
        raw = raw.replace("+", " ")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:  # bytes that are not UTF-8, or a request target that was not ASCII to begin with
        raise _DecodeError("not valid UTF-8 once percent-decoded") from None


def path_key(request: web.Request) -> str:
    """The key of a `/v1/kv/{key}` route, decoded from the raw request target."""
    path = request.raw_path.partition("?")[0]
    if not path.startswith(KV_PREFIX):  # an absolute-form target: aiohttp matched it, its decoding stands
        return check_key(request.match_info["key"])
    raw = path[len(KV_PREFIX):]
    try:
        return check_key(percent_decode(raw))
    except _DecodeError as exc:
        raise InvalidKeyError(raw, str(exc)) from None


def query_options(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query's options, each at most once and each one of `allowed`, strictly decoded."""
    raw = request.raw_path.partition("?")[2]
    if not raw:
        return {}
    options: dict[str, str] = {}
    unknown: set[str] = set()
    duplicated: set[str] = set()
    for part in raw.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        try:
            name = percent_decode(raw_name, plus_is_space=True)
            value = percent_decode(raw_value, plus_is_space=True)
        except _DecodeError as exc:
            raise InvalidOptionError(f"query option {raw_name[:40]!r}: {exc}") from None
        if name not in allowed:
            unknown.add(name)
        elif name in options:
            duplicated.add(name)
        options[name] = value
    if unknown:
        hints = "".join(f" ({_OPTION_HINTS[name]})" for name in sorted(unknown) if name in _OPTION_HINTS)
        names = ", ".join(repr(name[:40]) for name in sorted(unknown))
        raise InvalidOptionError(f"unknown query option(s): {names}{hints}; this route takes "
                                 f"{', '.join(sorted(allowed)) or 'none'}")
    if duplicated:
        raise InvalidOptionError(f"query option(s) given more than once: {', '.join(sorted(duplicated))}")
    return options


def int_option(name: str, raw: str, low: int, high: int) -> int:
    """An integer option in `low..high`, in ASCII digits only (`str.isdigit` alone also takes superscripts and
    Arabic-Indic digits, which `int` then reads or refuses)."""
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidOptionError(f"{name} must be an integer in {low}..{high}, got {raw[:40]!r}")
    return int(raw)


def op_id_of(request: web.Request) -> str | None:
    """The request's op_id, from the `Idempotency-Key` header (the one place for every method)."""
    raw = request.headers.get(IDEMPOTENCY_HEADER)
    return None if raw is None else check_op_id(raw)
