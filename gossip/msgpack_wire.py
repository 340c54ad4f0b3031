"""Reading msgpack that came from outside: the one list of errors a malformed payload raises, and one way to name them.

A hostile or corrupt payload can make ``msgpack.unpackb`` (and ``Unpacker``) raise more kinds than its docs list:
`ValueError` and its subclasses (truncated input, extra data, a byte that begins no value, nesting past the C
unpacker's stack, bad UTF-8, a map key type ``strict_map_key`` refuses), `TypeError` (an unhashable map key when keys
are not strict), `OverflowError`, `RecursionError` (deep nesting in the pure-Python fallback) and the package's own
`msgpack.UnpackException` family (`OutOfData`, `BufferFull`). Every reader of untrusted msgpack catches
`UNPACK_ERRORS` and turns the exception into its own domain error with `unpack_error_reason` as the detail.
"""

from __future__ import annotations

import msgpack

UNPACK_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException,
)

# Some of them carry no text at all (FormatError, StackError, OutOfData): say what they mean instead.
_SILENT: dict[type[Exception], str] = {
    msgpack.FormatError: "a byte that begins no msgpack value",
    msgpack.StackError: "nested too deep",
    msgpack.OutOfData: "the data ends in the middle of a value",
    RecursionError: "nested too deep",
}


def unpack_error_reason(exc: BaseException) -> str:
    """One line saying why a payload did not decode: the error's own text, or what a silent error kind means."""
    for kind, reason in _SILENT.items():
        if isinstance(exc, kind):
            return reason
    return str(exc) or type(exc).__name__


__all__ = ["UNPACK_ERRORS", "unpack_error_reason"]
