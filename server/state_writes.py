"""Writes of full states to the `states` table outside the log: what tells the keyspace (and through it the hash
tree over the stored digests) of each write, before it is queued and once it has committed.

Why this order matters (`server.keyspace`, `gossip.anti_entropy.merkle.StoredTree`): a key may leave memory only once
its bytes are committed, or a read from disk would miss the newest state; and a key's stored digest may change only
while the tree holds that key in its overlay, or the tree's node hashes would stop matching what is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from rumor.crdt.encoding import holds_entries
from rumor.server.disk_index import DigestColumns, stored_digest_columns
from rumor.server.keyspace import Keyspace
from rumor.server.storage import StateRow, Storage


def when_committed(keyspace: Keyspace, commit: asyncio.Future[None],
                   rows: list[tuple[str, bytes, bytes | None]]) -> None:
    """(key, stored bytes, digest) of the states ``commit`` writes: once it settles well, the keyspace hears which
    bytes (and digests) are on disk (`Keyspace.persisted`), so it may let those keys go from memory."""

    def settled(done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is None:
            keyspace.persisted(rows)

    commit.add_done_callback(settled)


def write_stored(storage: Storage, keyspace: Keyspace, rows: Sequence[tuple[str, str, bytes]],
                 columns: Mapping[str, DigestColumns] | None = None, *,
                 fresh: bool = False) -> asyncio.Future[None] | None:
    """Queues (key, type name, stored bytes) rows as checkpointed states with their digest columns and empty flag
    (found from the bytes: nothing is decoded unless they are of version 1); returns the last commit's future, None
    for no rows. The caller guarantees each row is the key's newest state and that none is in the keyspace with
    another (a raw install of keys unknown here, or a stored row rewritten as it is). ``columns``: the digest
    columns of some rows, made from the same bytes elsewhere (`sync.check_and_hash_states`). ``fresh``: no key
    has a row yet (`Storage.checkpoint`)."""
    if not rows:
        return None
    known = columns or {}
    columns_of = [known.get(key) or stored_digest_columns(key, type_name, blob) for key, type_name, blob in rows]
    keyspace.storing([(row[0], made.digest, made.size) for row, made in zip(rows, columns_of, strict=True)])
    states = []
    for (key, type_name, blob), made in zip(rows, columns_of, strict=True):
        holds = holds_entries(blob)
        states.append((key, StateRow(type_name, blob, None if holds is None else not holds, made.digest, made.size,
                                     made.leaf)))
    commit = storage.checkpoint_many(states, fresh=fresh)
    when_committed(keyspace, commit, [(key, row.state, row.digest) for key, row in states])
    return commit


def install_stored(storage: Storage, keyspace: Keyspace, rows: Sequence[tuple[str, str, bytes]],
                   columns: Mapping[str, DigestColumns] | None = None) -> \
        tuple[list[tuple[str, str, bytes]], asyncio.Future[None] | None]:
    """A bulk install of raw (key, type name, stored bytes) rows for the keys ``keyspace`` does not hold
    (`Keyspace.install_stored`), queued with their digests in one batch (`write_stored`, with ``columns``): the
    rows taken, and the commit's future (None when none was taken)."""
    taken = keyspace.install_stored(rows)  # keys with no row, committed or queued (their keyspace entry is new)
    return taken, write_stored(storage, keyspace, taken, columns, fresh=True) if taken else None
