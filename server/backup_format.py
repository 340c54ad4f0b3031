"""The backup file format (`rumor export` writes it, `rumor import` reads it): one record per key, versioned, checked.

Layout, version 1 (every integer big-endian; msgpack with bin for bytes and str for text, as `msgpack.packb`
writes with ``use_bin_type=True``)::

    file     = MAGIC  frame(header)  frame(record)*  END  frame(trailer)  <end of file>
    MAGIC    = 89 52 55 4d 4f 52 0d 0a 1a 0a        (b"\\x89RUMOR\\r\\n\\x1a\\n", 10 bytes)
    frame(x) = uint32 length n (1 .. limit)  +  n bytes: msgpack of x, exactly one value
    END      = 00 00 00 00                          (a frame of length 0: no more records)
    header   = {"format": "rumor-export", "version": 1, "node": <id of the exporting node>,
                "created_unix_ms": <int>, "wire": <CRDT encoding version of the states, 1 or 2>}
    record   = [key, type, state]: key a str (1..1024 bytes of UTF-8), type one of the API's type names
               (counter, set, register, mvregister, map), state the key's whole CRDT state as `crdt.encode`
               writes it (`crdt.encoding.compressed` may have deflated a big one: flag byte FLAG_ZLIB)
    trailer  = {"count": <records in the file>, "sha256": <32 bytes: SHA-256 of every byte from MAGIC to END,
                both included>}

Records come in strictly increasing key order (code point order, which is UTF-8 byte order): no key twice. Emptied
keys are records too: their causal context is what keeps a delete in force after a restore. The magic's first byte
is not ASCII and its CR LF / LF tell a file mangled by a text-mode transfer, as PNG's does. Limits: a header or
trailer frame is at most `MAX_META_FRAME_BYTES`, a record frame at most the reader's ``max_record_bytes`` (default
`MAX_RECORD_BYTES`); the length is checked before any byte of the frame is buffered.

A reader rejects, with `BackupFormatError` naming the record and byte offset: a wrong magic, a header that is not
exactly the map above (an unknown or missing field, a version other than 1), a frame over its limit, a record
that is not ``[str, str, bytes]``, a key out of order or invalid (lone surrogates cannot be in UTF-8 at all), an
unknown type, a state that does not decode as that type, a file that ends before its trailer (truncated), a count
or checksum that does not match, and any byte after the trailer. `ExportReader` only parses and hashes;
`check_record` decodes one record's state (the expensive part), so a caller can verify every record before it
applies any (see `server.backup`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from rumor.crdt import CRDTError, decode
from rumor.crdt.encoding import VERSION as CRDT_WIRE_VERSION
from rumor.server.errors import BadRequestError, InvalidKeyError
from rumor.server.values import TYPES, check_key

MAGIC = b"\x89RUMOR\r\n\x1a\n"
FORMAT_NAME = "rumor-export"
FORMAT_VERSION = 1
MEDIA_TYPE = "application/x-rumor-export"
#: what a file's name usually ends with (`rumor export -o` does not insist)
SUFFIX = ".rumor-export"
MAX_META_FRAME_BYTES = 4096
#: a record frame's default limit: a key's whole state (a 1M-element set is about 15 MB, deflated a third of that)
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: the most a record's state may inflate to when decoded (a deflated state holds up to about three times its size)
MAX_STATE_BYTES = 8 * MAX_RECORD_BYTES
#: CRDT encoding versions `crdt.decode` reads
READABLE_WIRE_VERSIONS = (1, 2)
END = b"\x00\x00\x00\x00"
#: conflicting keys an import's answer names (all are counted)
MAX_CONFLICTS_LISTED = 100
_LENGTH_BYTES = 4
_HEADER_FIELDS = frozenset({"format", "version", "node", "created_unix_ms", "wire"})
_TRAILER_FIELDS = frozenset({"count", "sha256"})


class BackupFormatError(BadRequestError):
    """An export file (or import body) that is not a valid, complete rumor export: nothing of it is imported."""

    code = "bad_export"


@dataclass(frozen=True, slots=True)
class ExportHeader:
    node: str
    created_unix_ms: int
    wire: int

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "created_unix_ms": self.created_unix_ms, "wire": self.wire}


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One key's record as read (`index` counts from 0, `offset` is its frame's first byte in the file)."""

    key: str
    type_name: str
    state: bytes
    index: int
    offset: int


def _frame(value: Any) -> bytes:
    body = msgpack.packb(value, use_bin_type=True)
    return len(body).to_bytes(_LENGTH_BYTES, "big") + body


class ExportWriter:
    """Makes a file's bytes piece by piece (`header`, then `record` per key in key order, then `trailer`), hashing as
    it goes, so an export streams in constant memory."""

    def __init__(self, node: str, created_unix_ms: int) -> None:
        self._hash = hashlib.sha256()
        self._count = 0
        self._node = node
        self._created_unix_ms = created_unix_ms

    @property
    def count(self) -> int:
        return self._count

    def header(self) -> bytes:
        data = MAGIC + _frame({"format": FORMAT_NAME, "version": FORMAT_VERSION, "node": self._node,
                               "created_unix_ms": self._created_unix_ms, "wire": CRDT_WIRE_VERSION})
        self._hash.update(data)
        return data

    def record(self, key: str, type_name: str, state: bytes) -> bytes:
        data = _frame([key, type_name, state])
        self._hash.update(data)
        self._count += 1
        return data

    def trailer(self) -> bytes:
        self._hash.update(END)
        return END + _frame({"count": self._count, "sha256": self._hash.digest()})


# reader states
_MAGIC, _HEADER, _RECORDS, _TRAILER, _DONE, _FAILED = range(6)


class ExportReader:
    """Parses a file fed in pieces of any size: `feed(data)` yields the records completed by `data`, `finish()`
    says the whole file was there. Every structural check happens here; a record's state is only checked by
    `check_record`. The first error raises `BackupFormatError`, and the reader is then unusable."""

    def __init__(self, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.max_record_bytes = max_record_bytes
        self.header: ExportHeader | None = None
        self.count = 0
        self._buffer = bytearray()
        self._offset = 0  # the file offset of self._buffer[0]
        self._state = _MAGIC
        self._hash = hashlib.sha256()
        self._last_key: str | None = None
        self._failure = ""

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> Iterator[ExportRecord]:
        """The records `data` completes, in file order. Consume the iterator before feeding more."""
        if self._state == _FAILED:
            raise BackupFormatError(self._failure)
        if self._state == _DONE:
            if data:
                raise self._error(self._offset, "bytes after the trailer")
            return
        self._buffer += data
        at = 0
        try:
            while True:
                if self._state == _MAGIC:
                    if len(self._buffer) < len(MAGIC):
                        if not MAGIC.startswith(bytes(self._buffer)):
                            raise self._error(0, "not a rumor export (wrong magic bytes)")
                        break
                    if self._buffer[:len(MAGIC)] != MAGIC:
                        raise self._error(0, "not a rumor export (wrong magic bytes)")
                    self._hash.update(MAGIC)
                    at = len(MAGIC)
                    self._state = _HEADER
                    continue
                frame = self._take_frame(at)
                if frame is None:
                    break
                start, body, at = frame
                if self._state == _HEADER:
                    self.header = self._parse_header(body, start)
                    self._state = _RECORDS
                elif self._state == _RECORDS:
                    if not body:
                        self._state = _TRAILER
                        continue
                    yield self._parse_record(body, start)
                else:
                    self._check_trailer(body, start)
                    self._state = _DONE
                    if at != len(self._buffer):
                        raise self._error(self._offset + at, "bytes after the trailer")
                    break
        finally:
            del self._buffer[:at]
            self._offset += at

    def finish(self) -> ExportHeader:
        """The header, once the whole file was fed; `BackupFormatError` if it ended early."""
        if self._state == _FAILED:
            raise BackupFormatError(self._failure)
        if self._state != _DONE:
            where = {_MAGIC: "in its magic bytes", _HEADER: "in its header", _RECORDS: f"after {self.count} records "
                     "without the end marker and trailer", _TRAILER: "in its trailer"}[self._state]
            raise self._error(self._offset + len(self._buffer), f"truncated: the file ends {where}")
        assert self.header is not None
        return self.header

    def _take_frame(self, at: int) -> tuple[int, bytes, int] | None:
        """(file offset, body, buffer index after it) of the frame starting at buffer index `at`, if all there."""
        buffer = self._buffer
        if len(buffer) - at < _LENGTH_BYTES:
            return None
        length = int.from_bytes(buffer[at:at + _LENGTH_BYTES], "big")
        start = self._offset + at
        limit = self.max_record_bytes if self._state == _RECORDS else MAX_META_FRAME_BYTES
        if length > limit or (length == 0 and self._state != _RECORDS):
            what = {_HEADER: "header", _RECORDS: f"record {self.count}", _TRAILER: "trailer"}[self._state]
            raise self._error(start, f"{what} frame of {length} bytes (limit {limit})" if length
                              else f"empty {what} frame")
        end = at + _LENGTH_BYTES + length
        if len(buffer) < end:
            return None
        if self._state != _TRAILER:  # the checksum covers MAGIC through END, not the trailer itself
            self._hash.update(memoryview(buffer)[at:end])
        return start, bytes(buffer[at + _LENGTH_BYTES:end]), end

    def _unpack(self, body: bytes, offset: int, what: str) -> Any:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ValueError: bad UTF-8, extra data, ...
            raise self._error(offset, f"{what} is not one msgpack value ({type(exc).__name__}: {exc})"[:300]) from None

    def _parse_header(self, body: bytes, offset: int) -> ExportHeader:
        header = self._unpack(body, offset, "header")
        if not isinstance(header, dict):
            raise self._error(offset, "the header is not a map")
        if header.get("format") != FORMAT_NAME:
            raise self._error(offset, f"not a rumor export (format {header.get('format')!r})")
        version = header.get("version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise self._error(offset, f"export format version {version!r} is not supported (this rumor reads "
                                      f"version {FORMAT_VERSION})")
        if set(header) != _HEADER_FIELDS:
            fields = sorted(map(str, set(header) ^ _HEADER_FIELDS))
            raise self._error(offset, f"the header's fields are wrong (unknown or missing: {', '.join(fields)})")
        node, created, wire = header["node"], header["created_unix_ms"], header["wire"]
        if not isinstance(node, str) or type(created) is not int or created < 0 \
                or wire not in READABLE_WIRE_VERSIONS or type(wire) is not int:
            raise self._error(offset, "the header's node, created_unix_ms or wire is malformed")
        return ExportHeader(node, created, wire)

    def _parse_record(self, body: bytes, offset: int) -> ExportRecord:
        record = self._unpack(body, offset, f"record {self.count}")
        if not (isinstance(record, list) and len(record) == 3 and isinstance(record[0], str)
                and isinstance(record[1], str) and isinstance(record[2], bytes)):
            raise self._error(offset, f"record {self.count} is not [key, type, state bytes]")
        key, type_name, state = record
        try:
            check_key(key)
        except InvalidKeyError as exc:
            raise self._error(offset, f"record {self.count} has an {exc}") from None
        if self._last_key is not None and key <= self._last_key:
            raise self._error(offset, f"record {self.count}'s key {key[:80]!r} is not after the previous record's "
                                      "(records are in strictly increasing key order)")
        if type_name not in TYPES:
            raise self._error(offset, f"record {self.count} ({key[:80]!r}) has an unknown type {type_name[:40]!r}")
        self._last_key = key
        parsed = ExportRecord(key, type_name, state, self.count, offset)
        self.count += 1
        return parsed

    def _check_trailer(self, body: bytes, offset: int) -> None:
        trailer = self._unpack(body, offset, "trailer")
        if not isinstance(trailer, dict) or set(trailer) != _TRAILER_FIELDS:
            raise self._error(offset, "the trailer is not {count, sha256}")
        if trailer["count"] != self.count or type(trailer["count"]) is not int:
            raise self._error(offset, f"the trailer counts {trailer['count']!r} records, the file holds {self.count}")
        if trailer["sha256"] != self._hash.digest():
            raise self._error(offset, "checksum mismatch: the file was altered or damaged")

    def _error(self, offset: int, reason: str) -> BackupFormatError:
        self._state = _FAILED
        self._buffer.clear()
        self._failure = f"bad export file at byte {offset}: {reason}"
        return BackupFormatError(self._failure)


def check_record(record: ExportRecord) -> Any:
    """The record's decoded state, or `BackupFormatError` if it does not decode as a state of its type."""
    try:
        state = decode(record.state, max_bytes=MAX_STATE_BYTES)
    except CRDTError as exc:
        raise BackupFormatError(f"bad export file at byte {record.offset}: record {record.index} "
                                f"({record.key[:80]!r}) holds no valid state: {exc}"[:400]) from None
    if type(state) is not TYPES[record.type_name]:
        raise BackupFormatError(f"bad export file at byte {record.offset}: record {record.index} "
                                f"({record.key[:80]!r}) holds a {type(state).__name__}, not a {record.type_name}")
    return state


__all__ = ["END", "MAGIC", "MAX_RECORD_BYTES", "MEDIA_TYPE", "BackupFormatError", "ExportHeader", "ExportReader",
           "ExportRecord", "ExportWriter", "check_record"]
