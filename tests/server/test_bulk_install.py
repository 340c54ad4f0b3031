"""The storage and keyspace halves of a bulk catch-up: `Keyspace.install_stored` (keys it lacks only, as bytes, all or
nothing) and `state_writes.write_stored` (the installed rows in one commit, with their digests, recovered after a
restart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rumor.crdt import encode
from rumor.server.disk_index import StateReader
from rumor.server.errors import TypeConflictError
from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.state_writes import write_stored
from rumor.server.storage import DB_FILE, Storage
from rumor.server.updates import Increment, RegisterWrite


def _blob(amount: int) -> bytes:
    source = Keyspace("peer", HLCSource(lambda: 1_000))
    source.apply_local("x", Increment(amount=amount))
    entry = source.entry("x")
    assert entry is not None
    return encode(entry.state)


async def test_installed_rows_are_on_disk_in_one_commit_with_digests_and_recovered(tmp_path: Path) -> None:
    commits: list[int] = []
    storage = Storage(tmp_path, on_commit=lambda _s, n: commits.append(n))
    await storage.open()
    reader = StateReader(tmp_path / DB_FILE)
    keyspace = Keyspace("me", HLCSource(lambda: 2_000), disk=reader)
    rows = [(f"k{i:03}", "counter", _blob(i + 1)) for i in range(300)]
    installed = keyspace.install_stored(rows)
    assert installed == rows
    commit = write_stored(storage, keyspace, installed)
    assert commit is not None
    await commit
    assert commits == [300]  # one transaction: a crash keeps all of them or none
    assert all(reader.digest_row(key.encode()) is not None for key, _, _ in rows)
    reader.close()
    await storage.close()
    reopened = StateReader(tmp_path / DB_FILE)
    again = Keyspace("me", HLCSource(lambda: 3_000), disk=reopened)
    assert len(again) == 300
    item = again.item("k041")
    assert item is not None and item.value == 42
    reopened.close()


def test_install_stored_takes_keys_it_lacks_as_bytes_and_leaves_the_others() -> None:
    keyspace = Keyspace("me", HLCSource(lambda: 2_000))
    keyspace.apply_local("held", RegisterWrite(value="mine"))
    installed = keyspace.install_stored([("held", "counter", _blob(1)), ("new", "counter", _blob(3)),
                                         ("new", "counter", _blob(4))])
    assert installed == [("new", "counter", _blob(3))]
    entry = keyspace.entry("new")
    assert entry is not None and not entry.decoded and entry.encoded() == _blob(3)
    item = keyspace.item("new")
    assert item is not None and item.value == 3
    held = keyspace.item("held")
    assert held is not None and held.value == "mine"


def test_install_stored_refuses_an_unknown_type_changing_nothing() -> None:
    keyspace = Keyspace("me", HLCSource(lambda: 2_000))
    with pytest.raises(TypeConflictError):
        keyspace.install_stored([("a", "counter", _blob(1)), ("b", "no-such-type", b"\x00")])
    assert len(keyspace) == 0
    assert keyspace.entry("a") is None
