"""A received empty state (a type's bottom) of a key held here changes nothing: it is not merged, the key is not
counted as changed and its digest is not marked (`states.is_bottom`)."""

from __future__ import annotations

import pytest
from replication_helpers import Replica

from rumor.crdt import ORSet, PNCounter, encode
from rumor.server.replication.errors import ReplicationProtocolError
from rumor.server.replication.states import is_bottom
from rumor.server.replication.wire import repl_message
from rumor.server.updates import SetChange


def holding_a_set() -> Replica:
    replica = Replica("a")
    replica.keyspace.apply_local("tags", SetChange(add=("x", "y")))
    replica.core.digests.flush(10)
    assert replica.core.digests.dirty == 0
    return replica


def test_bottom_is_the_empty_state_of_its_own_type_only() -> None:
    assert is_bottom("set", encode(ORSet()))
    assert is_bottom("counter", encode(PNCounter()))
    assert not is_bottom("counter", encode(ORSet()))
    assert not is_bottom("nonsense", encode(ORSet()))
    held = ORSet()
    held.merge(held.add_all("a", ["x"]))
    assert not is_bottom("set", encode(held))
    assert is_bottom("set", encode(held.delta_since(held.context())))  # what a peer lacking nothing is sent


def test_a_bottom_of_a_held_key_changes_nothing() -> None:
    a = holding_a_set()
    watched = a.core.changes.watch("tags")
    before = encode(a.keyspace.entry("tags").state)  # type: ignore[union-attr]
    a.core.handle_request(repl_message("tags", "set", encode(ORSet())), "b", 1.0)
    assert a.core.stats.bottoms_skipped == 1
    assert not a.core.changes.changed_since("tags", watched)
    assert a.core.digests.dirty == 0
    assert encode(a.keyspace.entry("tags").state) == before  # type: ignore[union-attr]
    delta = ORSet()
    delta.merge(delta.add_all("b", ["z"]))
    a.core.handle_request(repl_message("tags", "set", encode(delta)), "b", 1.0)  # a real delta still merges
    assert a.core.changes.changed_since("tags", watched) and a.core.digests.dirty == 1
    assert a.keyspace.item("tags").value == ["x", "y", "z"]  # type: ignore[union-attr]


def test_a_bottom_of_a_key_we_lack_makes_it_and_one_of_another_type_is_refused() -> None:
    a = holding_a_set()
    a.core.handle_request(repl_message("fresh", "set", encode(ORSet())), "b", 1.0)
    assert a.keyspace.type_of("fresh") == "set" and a.core.stats.bottoms_skipped == 0
    rejected = sum(a.core.stats.rejected.values())
    with pytest.raises(ReplicationProtocolError):  # raised to the transport, and counted
        a.core.handle_request(repl_message("tags", "counter", encode(PNCounter())), "b", 1.0)
    assert sum(a.core.stats.rejected.values()) == rejected + 1 and a.core.stats.bottoms_skipped == 0
    assert a.keyspace.type_of("tags") == "set"
