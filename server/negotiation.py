"""Body formats: JSON by default, msgpack when asked for (`Content-Type` / `Accept: application/msgpack`).

Both decoders feed the same validator (`values.check_json_value`), so a msgpack body can carry exactly what a JSON
body can: no bytes, no extension types, no non-string map keys. Anything else is a MalformedBodyError (400),
and so are strings that are not valid Unicode (lone surrogates, which JSON's `\\u` escapes can spell).
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

from rumor.gossip.msgpack_wire import UNPACK_ERRORS, unpack_error_reason
from rumor.server.errors import MalformedBodyError, UnsupportedMediaTypeError
from rumor.server.values import check_json_value

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_ALIASES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
#: curl's `-d` sends application/x-www-form-urlencoded unless told otherwise: its body is the JSON the user typed
_JSON_ALIASES = frozenset({JSON, "text/json", "application/x-www-form-urlencoded"})


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def request_format(content_type: str | None) -> str:
    """JSON or MSGPACK for a request's Content-Type (absent = JSON); anything else is 415."""
    if not content_type or content_type == JSON:  # the common cases, without parsing
        return JSON
    media = _media_type(content_type)
    if not media or media in _JSON_ALIASES:
        return JSON
    if media in _MSGPACK_ALIASES:
        return MSGPACK
    raise UnsupportedMediaTypeError(media)


def _reject_constant(name: str) -> Any:
    raise MalformedBodyError(f"{name} is not valid JSON")


# One decoder and one encoder for the process: `json.loads`/`json.dumps` with any non-default option build a new
# one per call, which cost as much as the parsing of a small body.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def decode_body(data: bytes, fmt: str) -> Any:
    """Bytes -> a validated JSON-model value."""
    try:
        if fmt == MSGPACK:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            value = _JSON_DECODER.decode(data.decode("utf-8-sig"))  # RFC 8259: UTF-8 (a BOM may be ignored)
    except MalformedBodyError:
        raise
    except UNPACK_ERRORS as exc:  # the JSON decoder's errors (ValueError, RecursionError) are among them
        reason = unpack_error_reason(exc)
        raise MalformedBodyError(f"body is not valid {'msgpack' if fmt == MSGPACK else 'JSON'}: {reason}") from exc
    # the whole body is checked as JSON; integer ranges are checked where a value is kept (a counter's increment
    # may be any integer)
    return check_json_value(value, int64=False)


def response_format(accept: str | None) -> str:
    """MSGPACK only when the client names it and does not rank JSON at least as high; JSON otherwise."""
    if not accept:
        return JSON
    json_q, msgpack_q = -1.0, -1.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in _MSGPACK_ALIASES:
            msgpack_q = max(msgpack_q, q)
        elif media in _JSON_ALIASES:
            json_q = max(json_q, q)
    return MSGPACK if msgpack_q > 0 and msgpack_q > json_q else JSON


def encode_body(value: Any, fmt: str) -> bytes:
    if fmt == MSGPACK:
        try:
            return msgpack.packb(value, use_bin_type=True)
        except OverflowError:  # a counter past 64 bits: msgpack has no such integer, so it travels as its digits
            return msgpack.packb(_big_ints_as_text(value), use_bin_type=True)
    return _JSON_ENCODER.encode(value).encode("utf-8")


def _big_ints_as_text(value: Any) -> Any:
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value)
    if type(value) is list:
        return [_big_ints_as_text(v) for v in value]
    if type(value) is dict:
        return {k: _big_ints_as_text(v) for k, v in value.items()}
    return value
