"""The export file format (`server.backup_format`): what the writer makes the reader reads back, fed in pieces of any
size; every kind of damage or forgery is refused with a `BackupFormatError` naming where."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumor.crdt import ORSet, PNCounter, encode
from rumor.crdt.encoding import compressed
from rumor.server.backup_format import (
    END,
    MAGIC,
    MAX_META_FRAME_BYTES,
    BackupFormatError,
    ExportReader,
    ExportRecord,
    ExportWriter,
    check_record,
)


def counter(replica: str, amount: int) -> bytes:
    state = PNCounter()
    state.merge(state.increment(replica, amount))
    return encode(state)


def big_set(n: int) -> bytes:
    state = ORSet()
    state.merge(state.add_all("a", [f"element-{i}" for i in range(n)]))
    return compressed(encode(state))


RECORDS = [("a", "counter", counter("n1", 3)), ("b/é", "set", big_set(2000)), ("c", "counter", counter("n2", -4))]


def written(records: Iterable[tuple[str, str, bytes]] = RECORDS) -> bytes:
    writer = ExportWriter("n1", 1_700_000_000_000)
    return writer.header() + b"".join(writer.record(*r) for r in records) + writer.trailer()


def frame(value: Any) -> bytes:
    body = msgpack.packb(value, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


HEADER = {"format": "rumor-export", "version": 1, "node": "n1", "created_unix_ms": 1, "wire": 2}


def forged(header: Any = HEADER, records: Iterable[bytes] = (), *, count: int | None = None,
           digest: bytes | None = None) -> bytes:
    """A file built from raw parts with a correct count and checksum unless told otherwise: what gets past the
    checksum must still be refused by the record checks."""
    records = list(records)
    body = MAGIC + frame(header) + b"".join(records) + END
    trailer = {"count": len(records) if count is None else count,
               "sha256": hashlib.sha256(body).digest() if digest is None else digest}
    return body + frame(trailer)


def read(data: bytes, piece: int | None = None, **reader_options: Any) -> list[ExportRecord]:
    reader = ExportReader(**reader_options)
    piece = piece or max(len(data), 1)
    records = [r for i in range(0, len(data), piece) for r in reader.feed(data[i:i + piece])]
    reader.finish()
    return records


def refused(data: bytes, match: str, **reader_options: Any) -> None:
    with pytest.raises(BackupFormatError, match=match):
        for record in read(data, **reader_options):
            check_record(record)


@given(piece=st.integers(min_value=1, max_value=4096))
def test_what_the_writer_makes_reads_back_whatever_the_piece_size(piece: int) -> None:
    records = read(written(), piece)
    assert [(r.key, r.type_name, r.state) for r in records] == RECORDS
    assert [r.index for r in records] == [0, 1, 2]
    assert len(check_record(records[1]).value()) == 2000  # the deflated state inflates back


def test_header_is_read() -> None:
    reader = ExportReader()
    list(reader.feed(written()))
    header = reader.finish()
    assert (header.node, header.created_unix_ms, header.wire) == ("n1", 1_700_000_000_000, 2)


def test_an_empty_keyspace_is_a_valid_file() -> None:
    assert read(written([])) == []
    assert read(forged()) == []


def test_truncated_at_any_byte_is_refused() -> None:
    data = written(RECORDS[:1] + RECORDS[2:])  # small: every cut is tried
    for cut in range(len(data)):
        with pytest.raises(BackupFormatError, match=r"truncated|wrong magic"):
            read(data[:cut], piece=7)


def test_a_flipped_bit_anywhere_is_refused() -> None:
    data = written(RECORDS[:1] + RECORDS[2:])
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x10
        with pytest.raises(BackupFormatError):
            for record in read(bytes(damaged)):
                check_record(record)


def test_wrong_checksum_and_wrong_count_are_refused() -> None:
    record = frame(["a", "counter", counter("n1", 1)])
    refused(forged(records=[record], digest=bytes(32)), "checksum mismatch")
    refused(forged(records=[record], count=2), "counts 2 records, the file holds 1")
    refused(forged(records=[record], count=True), "counts True")  # type: ignore[arg-type]


def test_wrong_magic_format_or_version_is_refused() -> None:
    refused(b"PK\x03\x04" + written()[4:], "wrong magic")
    refused(b"{\"format\": \"rumor-export\"}", "wrong magic")
    refused(forged(HEADER | {"format": "other"}), "not a rumor export")
    refused(forged(HEADER | {"version": 2}), "version 2 is not supported")
    refused(forged(HEADER | {"version": True}), "version True is not supported")
    refused(forged(HEADER | {"extra": 1}), "unknown or missing: extra")
    refused(forged({k: v for k, v in HEADER.items() if k != "node"}), "unknown or missing: node")
    refused(forged(HEADER | {"wire": 3}), "malformed")
    refused(forged(HEADER | {"created_unix_ms": -1}), "malformed")
    refused(forged(["not", "a", "map"]), "header is not a map")


def test_garbage_records_are_refused() -> None:
    good = counter("n1", 1)
    cases = {
        "not \\[key, type, state bytes\\]": [["a", "counter"], ["a", "counter", "text, not bytes"], {"a": 1},
                                             [1, "counter", good], ["a", "counter", good, "extra"]],
        "unknown type": [["a", "gcounter", good]],
        "invalid key": [["", "counter", good], ["k" * 1025, "counter", good]],
        "holds no valid state": [["a", "counter", b"\xc1\x02\x00garbage"], ["a", "counter", b""]],
        "holds a PNCounter, not a set": [["a", "set", good]],
    }
    for match, records in cases.items():
        for record in records:
            refused(forged(records=[frame(record)]), match)
    refused(forged(records=[frame(["a", "counter", good])[:4] + b"\xc1"]), "not one msgpack value")
    refused(forged(records=[b"\x00\x00\x00\x02" + msgpack.packb(1) + msgpack.packb(2)]), "not one msgpack value")


def test_a_lone_surrogate_in_a_key_is_refused() -> None:
    key = "a\ud800b".encode("utf-8", "surrogatepass")  # what no valid UTF-8 holds
    body = b"\x93" + bytes([0xA0 | len(key)]) + key + msgpack.packb("counter") + msgpack.packb(counter("n1", 1),
                                                                                                use_bin_type=True)
    refused(forged(records=[len(body).to_bytes(4, "big") + body]), "not one msgpack value")


def test_keys_out_of_order_or_twice_are_refused() -> None:
    a, b = (frame([k, "counter", counter("n1", 1)]) for k in ("a", "b"))
    refused(forged(records=[b, a]), "not after the previous record's")
    refused(forged(records=[a, a]), "not after the previous record's")


def test_oversized_frames_are_refused_before_they_are_buffered() -> None:
    reader = ExportReader(max_record_bytes=1000)
    start = MAGIC + frame(HEADER) + (1001).to_bytes(4, "big")
    with pytest.raises(BackupFormatError, match="record 0 frame of 1001 bytes \\(limit 1000\\)"):
        list(reader.feed(start))
    huge_header = MAGIC + (MAX_META_FRAME_BYTES + 1).to_bytes(4, "big")
    refused(huge_header, "header frame of 4097 bytes")
    refused(MAGIC + END, "empty header frame")


def test_bytes_after_the_trailer_are_refused() -> None:
    refused(written() + b"\x00", "bytes after the trailer")
    reader = ExportReader()
    list(reader.feed(written()))
    with pytest.raises(BackupFormatError, match="bytes after the trailer"):
        list(reader.feed(b"more"))


def test_a_refusing_reader_stays_refused() -> None:
    reader = ExportReader()
    with pytest.raises(BackupFormatError):
        list(reader.feed(b"nope, not an export"))
    with pytest.raises(BackupFormatError):
        reader.finish()


VECTOR = Path(__file__).resolve().parent.parent / "vectors" / "backup" / "export_v1.json"


def test_the_golden_file_reads_back_and_is_written_byte_for_byte() -> None:
    """`tests/vectors/backup/export_v1.json` pins format version 1: files written by earlier releases must still
    read, and a change to what the writer makes is a format change (a new version number)."""
    vector = json.loads(VECTOR.read_text())
    data = bytes.fromhex(vector["hex"])
    reader = ExportReader()
    records = [[r.key, r.type_name, r.state.hex()] for r in reader.feed(data)]
    assert reader.finish().to_json() == vector["header"]
    assert records == vector["records"]
    header = vector["header"]
    writer = ExportWriter(header["node"], header["created_unix_ms"])
    made = writer.header() + b"".join(writer.record(k, t, bytes.fromhex(s)) for k, t, s in records) + writer.trailer()
    assert made == data
