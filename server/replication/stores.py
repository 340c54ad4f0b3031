"""Where a `ReplicaCore` reaches the data (`Store`): key -> (API type name, CRDT state), plus a synchronous `merge`.

- `KeyspaceStore`: over a `server.keyspace.Keyspace`, for tests, benches and the simulator;
- `HostStore`: over a running node (`seam.ReplicaHost`), in production: merges also go into its durable log, and a
  bulk catch-up's states straight to its `states` table.

Both read a key's bytes without decoding it when it is cold (on disk only, or held as its stored bytes), so digests
and exports of cold keys cost no encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from rumor.server.disk_index import DigestColumns
from rumor.server.keyspace import Keyspace
from rumor.server.replication.digests import DigestIndex, Encoder, digest_index_for
from rumor.server.replication.seam import ReplicaHost
from rumor.server.state_writes import install_stored


class Store(Protocol):
    def keys(self) -> Iterable[str]: ...

    def digest_index(self, encode_key: Encoder) -> DigestIndex:
        """The anti-entropy digests of the store's keys (`digests.digest_index_for`)."""

    def get(self, key: str) -> tuple[str, Any] | None:
        """(API type name, CRDT state) of ``key``, or None if it was never written here."""

    def encoded(self, key: str) -> tuple[str, bytes] | None:
        """(API type name, `crdt.encode` of its state) of ``key``, or None: what digests hash (a store may have the
        bytes at hand without building the state)."""

    def encoded_many(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        """`encoded` of many keys at once (those that exist): one batch read of the cold ones."""

    def prefetch(self, keys: list[str]) -> None:
        """Merges into these keys follow: bring the cold ones into memory in one batch read (a hint)."""

    def type_of(self, key: str) -> str | None:
        """The API type name of ``key`` (a point read of a cold key's row, no decode), or None if never written."""

    def merge(self, key: str, type_name: str, state: Any, blob: bytes | None = None) -> None:
        """Join a received delta or state into ``key`` (synchronously; durability may complete later).

        ``blob`` is ``crdt.encode(state)`` when the caller holds it: the bytes it was decoded from (decoding checks
        they are canonical), so a store that logs the state need not encode it again."""

    def cold(self, key: str) -> bool:
        """Whether ``key``'s state is held only as its stored bytes (not decoded): `encoded` then costs no encoding."""

    def adopt(self, key: str, type_name: str, joined: Any, blob: bytes) -> None:
        """Install ``joined``, the join of ``key``'s state as it is and a received state (encoded: ``blob``), made
        off the event loop (`big_merges`): `merge` of that state at the cost of an assignment."""


class KeyspaceStore:
    """`Store` over a `Keyspace`; ``on_merge(key, type_name, state)`` runs after each merge (e.g. durable logging)."""

    def __init__(self, keyspace: Keyspace, on_merge: Callable[[str, str, Any], None] | None = None) -> None:
        self.keyspace = keyspace
        self.on_merge = on_merge

    def keys(self) -> Iterable[str]:
        return list(self.keyspace)

    def digest_index(self, encode_key: Encoder) -> DigestIndex:
        return digest_index_for(self.keyspace, encode_key)

    def get(self, key: str) -> tuple[str, Any] | None:
        entry = self.keyspace.entry(key)
        return None if entry is None else (entry.type_name, entry.state)

    def encoded(self, key: str) -> tuple[str, bytes] | None:
        return self.keyspace.stored(key)

    def encoded_many(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        return self.keyspace.stored_many(keys)

    def prefetch(self, keys: list[str]) -> None:
        self.keyspace.prefetch(keys)

    def type_of(self, key: str) -> str | None:
        return self.keyspace.type_of(key)

    def merge(self, key: str, type_name: str, state: Any, blob: bytes | None = None) -> None:
        self.keyspace.merge_remote(key, type_name, state)
        if self.on_merge is not None:
            self.on_merge(key, type_name, state)

    def cold(self, key: str) -> bool:
        return self.keyspace.cold(key)

    def adopt(self, key: str, type_name: str, joined: Any, blob: bytes) -> None:
        self.keyspace.adopt_joined(key, type_name, joined)
        if self.on_merge is not None:
            self.on_merge(key, type_name, joined)

    def install(self, rows: list[tuple[str, str, bytes]],
                columns: Mapping[str, DigestColumns] | None = None) -> list[tuple[str, str, bytes]]:
        """States of keys the keyspace lacks, kept as their bytes (`Keyspace.install_stored`); the rows installed.
        (``columns``: nothing is stored, so there is nothing to use them for.)"""
        return self.keyspace.install_stored(rows)


class HostStore:
    """`Store` over a running `ReplicaHost`: merges go into its keyspace and its durable delta log."""

    def __init__(self, host: ReplicaHost) -> None:
        self.host = host

    def keys(self) -> list[str]:
        return list(self.host.keyspace)

    def digest_index(self, encode_key: Encoder) -> DigestIndex:
        return digest_index_for(self.host.keyspace, encode_key)

    def get(self, key: str) -> tuple[str, Any] | None:
        entry = self.host.keyspace.entry(key)
        return None if entry is None else (entry.type_name, entry.state)

    def encoded(self, key: str) -> tuple[str, bytes] | None:
        return self.host.keyspace.stored(key)

    def encoded_many(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        return self.host.keyspace.stored_many(keys)

    def prefetch(self, keys: list[str]) -> None:
        self.host.keyspace.prefetch(keys)

    def type_of(self, key: str) -> str | None:
        return self.host.keyspace.type_of(key)

    def merge(self, key: str, type_name: str, state: Any, blob: bytes | None = None) -> None:
        self.host.merge_remote_nowait(key, type_name, state, blob)

    def cold(self, key: str) -> bool:
        return self.host.keyspace.cold(key)

    def adopt(self, key: str, type_name: str, joined: Any, blob: bytes) -> None:
        self.host.adopt_remote_nowait(key, type_name, joined, blob)

    @property
    def install_records_digests(self) -> bool:
        """Whether `install` tells the digest index of each row it takes: over a disk, the index hears of every
        write's digest columns (`write_stored`, `Keyspace.storing`)."""
        return self.host.keyspace.digest_sink is not None

    def install(self, rows: list[tuple[str, str, bytes]],
                columns: Mapping[str, DigestColumns] | None = None) -> list[tuple[str, str, bytes]]:
        """A bulk catch-up's states of keys the node lacks: into the keyspace as bytes (`Keyspace.install_stored`)
        and to storage as checkpointed states with their digests, all in one batch (`state_writes.write_stored`),
        not awaited (like a merge: the peer still holds them). Once committed they leave memory. ``columns``: the
        digest columns of some rows, already made from the same bytes."""
        return install_stored(self.host.storage, self.host.keyspace, rows, columns)[0]


__all__ = ["HostStore", "KeyspaceStore", "Store"]
