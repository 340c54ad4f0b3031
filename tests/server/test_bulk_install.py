"""The storage and keyspace halves of a bulk catch-up: `Storage.put_states` (one batch, never over a state queued
for the key before it) and `Keyspace.install_encoded` (keys it lacks only, as bytes, all or nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rumor.crdt import encode
from rumor.server.errors import TypeConflictError
from rumor.server.hlc_source import HLCSource
from rumor.server.keyspace import Keyspace
from rumor.server.storage import Storage
from rumor.server.updates import Increment, RegisterWrite


def _blob(amount: int) -> bytes:
    source = Keyspace("peer", HLCSource(lambda: 1_000))
    source.apply_local("x", Increment(amount=amount))
    entry = source.entry("x")
    assert entry is not None
    return encode(entry.state)


async def test_put_states_are_on_disk_in_one_commit_and_recovered(tmp_path: Path) -> None:
    commits: list[int] = []
    storage = Storage(tmp_path, on_commit=lambda _s, n: commits.append(n))
    await storage.open()
    rows = [(f"k{i}", "counter", _blob(i + 1)) for i in range(300)]
    await storage.put_states(rows)
    assert commits == [300]
    await storage.close()
    reopened = Storage(tmp_path)
    recovered = await reopened.open()
    assert sorted(recovered.states) == sorted(rows)
    await reopened.close()


async def test_a_put_state_never_replaces_a_checkpoint_queued_before_it(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.open()
    storage.checkpoint("k", "counter", _blob(7))  # the node's own, later state of the key
    await storage.put_states([("k", "counter", _blob(1)), ("j", "counter", _blob(2))])
    await storage.close()
    reopened = Storage(tmp_path)
    recovered = await reopened.open()
    assert dict((key, state) for key, _type, state in recovered.states) == {"k": _blob(7), "j": _blob(2)}
    await reopened.close()


def test_install_encoded_takes_keys_it_lacks_as_bytes_and_leaves_the_others() -> None:
    keyspace = Keyspace("me", HLCSource(lambda: 2_000))
    keyspace.apply_local("held", RegisterWrite(value="mine"))
    installed = keyspace.install_encoded([("held", "counter", _blob(1)), ("new", "counter", _blob(3)),
                                          ("new", "counter", _blob(4))])
    assert installed == [("new", "counter", _blob(3))]
    entry = keyspace.entry("new")
    assert entry is not None and not entry.decoded and entry.encoded() == _blob(3)
    item = keyspace.item("new")
    assert item is not None and item.value == 3
    held = keyspace.item("held")
    assert held is not None and held.value == "mine"


def test_install_encoded_refuses_an_unknown_type_changing_nothing() -> None:
    keyspace = Keyspace("me", HLCSource(lambda: 2_000))
    with pytest.raises(TypeConflictError):
        keyspace.install_encoded([("a", "counter", _blob(1)), ("b", "no-such-type", b"\x00")])
    assert len(keyspace) == 0
