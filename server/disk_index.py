"""The read side of the `states` table: what a disk-backed keyspace reads cold keys, listings and counts from.

Why a second connection: the storage writer thread owns the writing connection (group commit); reads happen on the
event loop, where a point read of a key by its primary key on a read-only connection in WAL mode costs some 10-20 µs,
cheaper than a thread hop. WAL readers never block the writer nor wait for it; each statement runs in its own read
transaction and sees every commit settled before it started, which is what the keyspace relies on: a key leaves
memory only once its bytes are committed (`state_cache.Entry.on_disk`), so a later read finds them here.

Listings never decode a state: each row carries an ``empty`` flag written with it (NULL in rows written before the
column existed, or installed as raw bytes that do not say: those are read from the bytes, `crdt.encoding.holds_entries`,
and decoded only when even the bytes cannot tell).

Every statement is read to its end (``fetchall``), so no read transaction stays open and holds back the WAL's
checkpointing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from rumor.crdt import CRDTError, decode, encode
from rumor.crdt.encoding import as_written, holds_entries
from rumor.gossip.anti_entropy.merkle import leaf_of, state_digest
from rumor.server.errors import StorageCorruptError

#: rows a listing reads from disk at a time while it looks for non-empty keys
LISTING_CHUNK_ROWS = 256
#: keys or leaves named in one `IN (...)` statement (`select_in`; SQLite allows 32,766 parameters since 3.32)
IN_CHUNK = 500
#: the shape of the anti-entropy hash tree whose leaf numbers the `states` table stores (`server.replication.digests`)
TREE_FANOUT = 8
TREE_DEPTH = 5
TREE_LEAVES = TREE_FANOUT**TREE_DEPTH


def select_in(conn: sqlite3.Connection, query: str, values: list[Any], before: tuple[Any, ...] = ()) -> Iterator[Any]:
    """The rows of ``query``, whose ``{marks}`` is an IN list, over ``values`` in chunks of `IN_CHUNK` (SQLite bounds
    the parameters of one statement); each chunk is read whole before the next is asked. ``before``: the parameters
    of the query that come before its IN list."""
    for i in range(0, len(values), IN_CHUNK):
        chunk = values[i : i + IN_CHUNK]
        yield from conn.execute(query.format(marks=",".join("?" * len(chunk))), (*before, *chunk)).fetchall()


class DigestColumns(NamedTuple):
    """What the `states` table stores beside a state for anti-entropy: the digest of the key's anti-entropy blob
    (type name, a NUL, the plain encoding: what `ReplicaCore.encode_key` hands the digest index), its size, and the
    key's leaf in the hash tree."""

    digest: bytes
    size: int
    leaf: int


def anti_entropy_blob(type_name: str, plain: bytes) -> bytes:
    """What anti-entropy sends of a key and its digest hashes: the type name, a NUL, the plain encoding
    (`server.replication.wire.state_blob`, split by `split_state_blob`)."""
    return type_name.encode("ascii") + b"\0" + plain


def digest_columns(key: str, type_name: str, plain: bytes) -> DigestColumns:
    """Of a state given as its plain encoding (`crdt.encode`)."""
    blob = anti_entropy_blob(type_name, plain)
    return DigestColumns(state_digest(blob), len(blob), leaf_of(key.encode("utf-8"), TREE_LEAVES))


def plain_encoding(key: str, stored: bytes) -> bytes:
    """The plain encoding (`crdt.encode`) of a state given as its stored bytes (possibly deflated or of version 1)."""
    try:
        plain = as_written(stored)
        return encode(decode(stored)) if plain is None else plain
    except CRDTError as exc:
        raise StorageCorruptError(f"the stored state of key {key!r} is unreadable: {exc}") from exc


def stored_digest_columns(key: str, type_name: str, stored: bytes) -> DigestColumns:
    """Of a state given as its stored bytes (possibly deflated or of version 1)."""
    return digest_columns(key, type_name, plain_encoding(key, stored))


def stored_is_empty(key: str, blob: bytes) -> bool:
    """Whether the stored bytes of ``key`` hold an empty state: from their layout, decoding only when that cannot
    tell (version-1 bytes)."""
    try:
        holds = holds_entries(blob)
        if holds is None:
            return bool(decode(blob).is_empty())
    except CRDTError as exc:
        raise StorageCorruptError(f"the stored state of key {key!r} is unreadable: {exc}") from exc
    return not holds


class StateReader:
    """Reads of the `states` table on its own read-only connection (see the module docstring)."""

    def __init__(self, database: Path) -> None:
        # reads happen on the event loop; not tied to its thread so that work moved off the loop may read too
        # (the sqlite3 module serializes calls on one connection)
        self._conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA query_only=1")
        #: the rows of the keys of a `rows_of` block, read as it opened: (the keys asked, key -> (digest, size))
        self._rows_read: tuple[set[str], dict[str, tuple[bytes | None, int | None]]] | None = None

    def close(self) -> None:
        self._conn.close()

    def count(self) -> int:
        """Rows in the table (a scan of its smallest index: done once, at start)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM states").fetchall()[0][0])

    def get(self, key: str) -> tuple[str, bytes] | None:
        """(type name, stored bytes) of ``key``, or None."""
        rows = self._conn.execute("SELECT type, state FROM states WHERE key = ?", (key,)).fetchall()
        return rows[0] if rows else None

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        """`get` of many keys at once (one statement per `IN_CHUNK` keys): those that have a row."""
        return {key: (type_name, blob) for key, type_name, blob in select_in(
            self._conn, "SELECT key, type, state FROM states WHERE key IN ({marks})", keys)}

    def existing(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` that have a row (a bulk check: one statement per `IN_CHUNK` keys, or none inside a
        `rows_of` block that read them)."""
        read = self._read_rows(keys)
        if read is not None:
            return {key for key in keys if key in read}
        return {key for (key,) in select_in(self._conn, "SELECT key FROM states WHERE key IN ({marks})", keys)}

    @contextmanager
    def rows_of(self, keys: list[bytes]) -> Iterator[None]:
        """Within the block, `existing` and `digest_rows` of any of ``keys`` are answered from one read of their rows
        made as it opens (`merkle.LeafSource.rows_of`: a bulk install asked for the same keys' rows three times, a
        statement each time, a fifth of a catch-up's event loop)."""
        names = [key.decode("utf-8") for key in keys]
        found: dict[str, tuple[bytes | None, int | None]] = {key: (digest, size) for key, digest, size in select_in(
            self._conn, "SELECT key, digest, size FROM states WHERE key IN ({marks})", names)}
        outer, self._rows_read = self._rows_read, (set(names), found)
        try:
            yield
        finally:
            self._rows_read = outer

    def _read_rows(self, names: list[str]) -> dict[str, tuple[bytes | None, int | None]] | None:
        """The rows the open `rows_of` block read, if it read every one of ``names``; else None (ask SQLite)."""
        read = self._rows_read
        return read[1] if read is not None and read[0].issuperset(names) else None

    def type_of(self, key: str) -> str | None:
        rows = self._conn.execute("SELECT type FROM states WHERE key = ?", (key,)).fetchall()
        return rows[0][0] if rows else None

    def has_value(self, key: str) -> bool:
        """Whether ``key`` is on disk with a non-empty state."""
        rows = self._conn.execute("SELECT empty, CASE WHEN empty IS NULL THEN state END FROM states WHERE key = ?",
                                  (key,)).fetchall()
        if not rows:
            return False
        empty, blob = rows[0]
        return not (stored_is_empty(key, blob) if empty is None else empty)

    def keys_after(self, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` keys strictly after ``after`` (from the first when None), in key order."""
        if after is None:
            rows = self._conn.execute("SELECT key FROM states ORDER BY key LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._conn.execute("SELECT key FROM states WHERE key > ? ORDER BY key LIMIT ?",
                                      (after, limit)).fetchall()
        return [key for (key,) in rows]

    def rows_after(self, after: str | None, limit: int) -> list[tuple[str, str, bytes]]:
        """Up to ``limit`` (key, type name, stored bytes) strictly after ``after``, in key order (export)."""
        if after is None:
            return self._conn.execute("SELECT key, type, state FROM states ORDER BY key LIMIT ?", (limit,)).fetchall()
        return self._conn.execute("SELECT key, type, state FROM states WHERE key > ? ORDER BY key LIMIT ?",
                                  (after, limit)).fetchall()

    def undigested(self, after: str, limit: int) -> list[tuple[str, str, bytes]]:
        """Up to ``limit`` (key, type name, stored bytes) of rows stored without a digest (written before the column
        existed, or raw), keys after ``after`` (the caller's cursor), through the leaf index."""
        return self._conn.execute("SELECT key, type, state FROM states WHERE leaf IS NULL AND key > ? ORDER BY key "
                                  "LIMIT ?", (after, limit)).fetchall()

    # -- `merkle.LeafSource`: what a `StoredTree` reads ------------------------------------------------------------

    def leaf_hashes(self, leaf_count: int) -> tuple[list[int], int]:
        if leaf_count != TREE_LEAVES:
            raise ValueError(f"the states table numbers {TREE_LEAVES} leaves, not {leaf_count}")
        leaves = [0] * leaf_count
        keys = 0
        for leaf, value, count in self._conn.execute("SELECT leaf, hash, keys FROM leaf_hashes").fetchall():
            leaves[leaf] = int.from_bytes(value, "big")
            keys += count
        return leaves, keys

    def digest_row(self, key: bytes) -> tuple[bytes, int] | None:
        rows = self._conn.execute("SELECT digest, size FROM states WHERE key = ? AND digest IS NOT NULL",
                                  (key.decode("utf-8"),)).fetchall()
        return rows[0] if rows else None

    def digest_rows(self, keys: list[bytes]) -> dict[bytes, tuple[bytes, int]]:
        names = [key.decode("utf-8") for key in keys]
        read = self._read_rows(names)
        if read is not None:
            return {key: (held[0], held[1] or 0) for key, name in zip(keys, names, strict=True)
                    if (held := read.get(name)) is not None and held[0] is not None}
        return {key.encode("utf-8"): (digest, size) for key, digest, size in select_in(
            self._conn, "SELECT key, digest, size FROM states WHERE key IN ({marks}) AND digest IS NOT NULL", names)}

    def leaves_rows(self, leaves: list[int],
                    states_up_to: int = 0) -> list[tuple[int, bytes, bytes, int, bytes | None]]:
        """`merkle.LeafSource.leaves_rows`: a state is read (with its row: a bulk walk's reply costs one random read
        a key, not three) only when its size says it may be sent; a listing alone reads the index of leaves."""
        if not states_up_to:
            return [(leaf, key.encode("utf-8"), digest, size, None) for leaf, key, digest, size in select_in(
                self._conn, "SELECT leaf, key, digest, size FROM states WHERE leaf IN ({marks}) AND digest IS NOT NULL",
                leaves)]
        return [(leaf, key.encode("utf-8"), digest, size,
                 None if stored is None else anti_entropy_blob(type_name, plain_encoding(key, stored)))
                for leaf, key, digest, size, type_name, stored in select_in(
                    self._conn, "SELECT leaf, key, digest, size, type, CASE WHEN size <= ? THEN state END FROM states "
                                "WHERE leaf IN ({marks}) AND digest IS NOT NULL", leaves, (states_up_to,))]

    def listing(self, start: str, inclusive: bool, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, type name) of each key with a non-empty state from ``start`` on (``inclusive`` or not), in key
        order, while keys start with ``prefix``; `LISTING_CHUNK_ROWS` rows are read at a time, as the caller asks."""
        op = ">=" if inclusive else ">"
        while True:
            rows = self._conn.execute(
                f"SELECT key, type, empty, CASE WHEN empty IS NULL THEN state END FROM states "
                f"WHERE key {op} ? AND (empty IS NULL OR empty = 0) ORDER BY key LIMIT ?",
                (start, LISTING_CHUNK_ROWS)).fetchall()
            for key, type_name, empty, blob in rows:
                if not key.startswith(prefix):
                    return
                if empty is None and stored_is_empty(key, blob):
                    continue
                yield key, type_name
            if len(rows) < LISTING_CHUNK_ROWS:
                return
            start, op = rows[-1][0], ">"
