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
from pathlib import Path

from rumor.crdt import CRDTError, decode
from rumor.crdt.encoding import holds_entries
from rumor.server.errors import StorageCorruptError

#: rows a listing reads from disk at a time while it looks for non-empty keys
LISTING_CHUNK_ROWS = 256
#: keys `StateReader.existing` asks about in one statement (SQLite allows 32,766 parameters since 3.32)
EXISTING_CHUNK_KEYS = 500


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

    def close(self) -> None:
        self._conn.close()

    def count(self) -> int:
        """Rows in the table (a scan of its smallest index: done once, at start)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM states").fetchall()[0][0])

    def get(self, key: str) -> tuple[str, bytes] | None:
        """(type name, stored bytes) of ``key``, or None."""
        rows = self._conn.execute("SELECT type, state FROM states WHERE key = ?", (key,)).fetchall()
        return rows[0] if rows else None

    def existing(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` that have a row (a bulk check: one statement per `EXISTING_CHUNK_KEYS` keys)."""
        found: set[str] = set()
        for i in range(0, len(keys), EXISTING_CHUNK_KEYS):
            chunk = keys[i : i + EXISTING_CHUNK_KEYS]
            marks = ",".join("?" * len(chunk))
            found.update(key for (key,) in self._conn.execute(
                f"SELECT key FROM states WHERE key IN ({marks})", chunk).fetchall())
        return found

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
