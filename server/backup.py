"""Backup and restore on a live node: stream every key's state out (`export_chunks`), join a file back in
(`import_export`). The file format is `server.backup_format`; the HTTP routes are `server.backup_http`.

**Export** pages through the keyspace in key order (`Keyspace.stored_after`, emptied keys included), encoding each
key's whole state as it reaches it, and gives the event loop back about every `LOOP_SLICE_S`: reads and writes
keep being served, and a key written during the export appears with its state when its page was read (each record
is one real state of its key, taken at one moment; the file as a whole is no snapshot of one instant, and need not
be: a restore is a join, which keeps whatever is newer on the other side). Memory stays at about one chunk.

**Import** must apply nothing of a file that is not valid to its last byte (a truncated upload, a flipped byte
caught by the checksum at the very end). A streamed body cannot be both checked to its end and applied as it
arrives, so it is **staged**: the first pass stores the body in a spooled temporary file (memory up to
`SPOOL_MEMORY_BYTES`, then a file in the node's data directory) while checking every frame, decoding every state and
hashing; only once the trailer's count and checksum match does the second pass read the staged copy and join each
record. The price is decoding every state twice (the second decoding is about a third of an import's CPU, measured;
keeping the decoded states instead would hold the whole file as objects, many times its size). The CLI checks the
file on its side before sending it too, so an operator learns of a bad file without touching the node; the node
cannot trust any client, so it checks again. Each record is joined as a local write of this node
(`Node.join_imported`): only what the node lacks is joined, logged durably and handed to replication, which pushes
it to the cluster and marks the key for anti-entropy. The answer comes once every joined record is committed: an
acknowledged import survives a crash. A key that holds another type here is counted as a conflict and left as it is;
the rest of the file goes on. A failure in the second pass (storage) leaves part of the file joined, which is
harmless: importing it again joins the rest, and what was joined stays joined.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rumor.crdt.encoding import compressed
from rumor.server.backup_format import (
    MAX_CONFLICTS_LISTED,
    MAX_RECORD_BYTES,
    ExportHeader,
    ExportReader,
    ExportWriter,
    check_record,
)
from rumor.server.errors import TypeConflictError
from rumor.server.hlc_source import wall_clock_ms
from rumor.server.node import Node

#: the longest an export or import holds the event loop before giving it back (GETs wait at most about this)
LOOP_SLICE_S = 0.001
#: keys an export takes from the keyspace at a time (it checks the clock after each page)
PAGE_KEYS = 16
#: an export hands its writer a chunk once it holds this much
CHUNK_BYTES = 256 * 1024
#: a staged import body stays in memory up to this size, then moves to a temporary file
SPOOL_MEMORY_BYTES = 16 * 1024 * 1024


class _Slicer:
    """Gives the loop back once `LOOP_SLICE_S` has passed since it last did."""

    def __init__(self) -> None:
        self._until = time.perf_counter() + LOOP_SLICE_S

    async def pause(self) -> None:
        if time.perf_counter() >= self._until:
            await asyncio.sleep(0)
            self._until = time.perf_counter() + LOOP_SLICE_S


async def export_chunks(node: Node, *, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """The export file of `node`'s keyspace, as chunks of about `chunk_bytes` (the last holds the trailer)."""
    keyspace = node.keyspace
    writer = ExportWriter(node.node_id, wall_clock_ms())
    out = bytearray(writer.header())
    slicer = _Slicer()
    after: str | None = None
    while rows := keyspace.stored_after(after, PAGE_KEYS):
        for key, type_name, encoded in rows:
            out += writer.record(key, type_name, compressed(encoded))
        after = rows[-1][0]
        if len(out) >= chunk_bytes:
            yield bytes(out)
            out.clear()
        await slicer.pause()
    out += writer.trailer()
    yield bytes(out)


@dataclass
class ImportResult:
    """What an import did: `merged` records brought something new, `unchanged` ones nothing the node lacked,
    `conflicts` named keys that hold another type here (left as they are)."""

    source: ExportHeader
    records: int = 0
    merged: int = 0
    unchanged: int = 0
    conflicts: int = 0
    conflicted: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "merged": self.merged, "unchanged": self.unchanged,
                "conflicts": self.conflicts, "conflicted": self.conflicted, "source": self.source.to_json()}


async def import_export(node: Node, chunks: AsyncIterable[bytes], *, spool_dir: Path | None = None,
                        max_record_bytes: int = MAX_RECORD_BYTES) -> ImportResult:
    """Checks the whole file `chunks` carry, then joins each record into `node` durably (see the module docstring).
    Raises `BackupFormatError` having changed nothing when the file is not a valid export."""
    node.keyspace  # noqa: B018 -- a stopped node refuses before reading the body (NodeNotRunningError)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, dir=None if spool_dir is None else str(spool_dir),
                                     prefix="rumor-import-") as spool:
        reader = ExportReader(max_record_bytes)
        slicer = _Slicer()
        async for chunk in chunks:
            spool.write(chunk)
            for record in reader.feed(chunk):
                check_record(record)
                await slicer.pause()
        result = ImportResult(reader.finish())
        spool.seek(0)
        await _join_staged(node, spool, ExportReader(max_record_bytes), result)
    return result


async def _join_staged(node: Node, spool: Any, reader: ExportReader, result: ImportResult) -> None:
    """The second pass: joins each record of the checked, staged file, then waits for their commits."""
    slicer = _Slicer()
    commits: set[asyncio.Future[None]] = set()
    while chunk := spool.read(CHUNK_BYTES):
        for record in reader.feed(chunk):
            await slicer.pause()
            result.records += 1
            try:
                written = node.join_imported(record.key, record.type_name, check_record(record), record.state)
            except TypeConflictError as exc:
                result.conflicts += 1
                if len(result.conflicted) < MAX_CONFLICTS_LISTED:
                    result.conflicted.append({"key": record.key, "type": record.type_name, "held": exc.existing})
                continue
            if written is None:
                result.unchanged += 1
                continue
            result.merged += 1
            if written not in commits:  # a new group commit: forget the settled ones (a failed one fails the import)
                for settled in [f for f in commits if f.done()]:
                    settled.result()
                    commits.discard(settled)
                commits.add(written)
    reader.finish()
    if commits:
        await asyncio.gather(*commits)


__all__ = ["ImportResult", "export_chunks", "import_export"]
