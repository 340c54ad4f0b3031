"""`rumor export` and `rumor import`: a backup of a live node to a file, and the file joined back into a node.

    rumor export --node URL -o FILE     (or > FILE)
    rumor import FILE --node URL

`export` checks the stream as it writes it (framing, count, checksum) and, with `-o`, writes `FILE.partial` and
renames it to FILE only once the whole export checked out: a FILE that exists is complete. On stdout there is no
taking back what was written, so a failed export says so on stderr and exits 1; its output lacks the trailer and
no import accepts it. `import` checks the whole file first (every frame, every state decoded, count, checksum)
without contacting the node, so a damaged file is refused with nothing sent; the node checks it once more as it
receives it (it trusts no client), then joins it and answers with the counts, which are printed as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

import aiohttp

from rumor.server.backup_format import BackupFormatError, ExportReader, check_record
from rumor.server.client import MalformedResponseError, RumorClient, RumorHTTPError

COMMANDS = ("export", "import")
_READ_BYTES = 256 * 1024


class ExportIncompleteError(BackupFormatError):
    """The node's export stream did not check out (it ended early, or arrived damaged)."""


def add_commands(client_command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Adds `export` and `import` through the CLI's `client_command(name, help)` (which adds --node and --token)."""
    export = client_command("export", "write a backup of every key's state to a file (the node keeps serving)")
    export.add_argument("-o", "--output", type=Path,
                        help="the file to write (made complete or not at all); default: standard output")
    restore = client_command("import", "join a backup file into a node: nothing newer the cluster holds is lost, "
                                       "and importing twice equals once")
    restore.add_argument("file", type=Path, help="a file written by rumor export")


def run(args: argparse.Namespace) -> int:
    """Runs `rumor export` or `rumor import`; an operator's problem is one line on stderr and status 1."""
    try:
        if args.command == "export":
            return asyncio.run(_export(args))
        return asyncio.run(_import(args))
    except (BackupFormatError, RumorHTTPError, MalformedResponseError) as exc:
        print(f"rumor: {args.command}: {exc}", file=sys.stderr)
    except OSError as exc:
        if exc.filename is not None:  # the file: missing, unreadable, a directory not there for -o ...
            print(f"rumor: {args.command}: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"rumor: {args.command}: cannot reach {args.node}: {exc}", file=sys.stderr)
    except aiohttp.ClientError as exc:
        print(f"rumor: {args.command}: cannot reach {args.node}: {str(exc) or type(exc).__name__}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


async def _export(args: argparse.Namespace) -> int:
    output: Path | None = args.output
    if output is None and sys.stdout.isatty():
        print("rumor: export: refusing to write a binary file to a terminal: pass -o FILE or redirect the output",
              file=sys.stderr)
        return 2
    partial = None if output is None else output.with_name(output.name + ".partial")
    try:
        with contextlib.ExitStack() as stack:
            sink: BinaryIO = sys.stdout.buffer if partial is None else stack.enter_context(partial.open("wb"))
            records, size = await _stream_export(args, sink)
            sink.flush()
            if partial is not None:
                os.fsync(sink.fileno())
        if partial is not None and output is not None:
            partial.replace(output)
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    print(f"rumor: exported {records} keys from {args.node} ({size} bytes)"
          + (f" to {output}" if output is not None else ""), file=sys.stderr)
    return 0


async def _stream_export(args: argparse.Namespace, sink: BinaryIO) -> tuple[int, int]:
    """Copies the node's export to `sink`, checking it on the way; (records, bytes) once it checked out."""
    reader = ExportReader()
    size = 0
    async with RumorClient(args.node, token=args.token) as client:
        async for chunk in client.export():
            for _ in reader.feed(chunk):
                pass
            sink.write(chunk)
            size += len(chunk)
    try:
        reader.finish()
    except BackupFormatError as exc:
        raise ExportIncompleteError(f"the node's export did not arrive whole ({exc})") from None
    return reader.count, size


def check_file(path: Path) -> int:
    """Checks a whole export file as the node will (decoding every state); its record count, or
    `BackupFormatError`."""
    reader = ExportReader()
    with path.open("rb") as source:
        while chunk := source.read(_READ_BYTES):
            for record in reader.feed(chunk):
                check_record(record)
    reader.finish()
    return reader.count


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_READ_BYTES):
            yield chunk


async def _import(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        check_file(path)
    except BackupFormatError as exc:
        raise BackupFormatError(f"{path}: {exc} (nothing was sent to the node)") from None
    async with RumorClient(args.node, token=args.token) as client:
        result = await client.import_export(_file_chunks(path))
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if result.get("conflicts"):
        print(f"rumor: import: {result['conflicts']} keys hold another type on the node and were left as they are "
              "(listed under 'conflicted')", file=sys.stderr)
    return 0


__all__ = ["COMMANDS", "ExportIncompleteError", "add_commands", "check_file", "run"]
