"""Delta dissemination and coverage/GC as pure state machines: joins, bounds, dedupe, never back to the source."""

from __future__ import annotations

import contextlib
import random

import pytest
from replication_helpers import Replica, states

from rumor.crdt import PNCounter
from rumor.server.replication import ReplicationConfig, ReplicationProtocolError
from rumor.server.replication.coverage import Coverage
from rumor.server.replication.disseminator import LocalBatch
from rumor.server.replication.replica import sync_pair
from rumor.server.replication.wire import DeltaEntry, DeltaGroup, Kind, pack_push, unpack_push
from rumor.server.updates import Increment, SetChange


def test_repeated_changes_to_one_key_are_joined_into_one_delta() -> None:
    a = Replica("a")
    for _ in range(100):
        a.keyspace.apply_local("hot", Increment(amount=1))
    pushes = a.core.tick(0.0, ["a", "b"]).pushes
    assert len(pushes) == 1
    groups = unpack_push(pushes[0][1])
    assert len(groups) == 1 and len(groups[0].entries) == 1
    b = Replica("b")
    b.core.handle_message(pushes[0][1], "a", 0.0)
    item = b.keyspace.item("hot")
    assert item is not None and item.value == 100


def test_a_batch_reuses_the_writers_encoding_and_never_mutates_the_writers_delta() -> None:
    from rumor.crdt import decode, encode

    batch = LocalBatch()
    counter = PNCounter()
    first = counter.increment("a", 1)
    counter.merge(first)
    first_blob = encode(first)
    batch.add("once", "counter", first, first_blob)
    assert batch.take() == [("once", "counter", first_blob)]  # the very bytes it was given: nothing re-encoded

    before = encode(first)
    batch.add("hot", "counter", first, first_blob)
    second = counter.increment("a", 2)
    batch.add("hot", "counter", second, encode(second))
    [(key, type_name, blob)] = batch.take()
    assert encode(first) == before  # the join went into a copy: the writer's delta (also logged) is unchanged
    joined = first.copy()
    joined.merge(second)
    assert (key, type_name, blob) == ("hot", "counter", encode(joined))  # stale bytes dropped, the join encoded
    assert decode(blob).value() == 3 and batch.joins == 1


def test_groups_are_never_sent_back_to_their_source_or_origin() -> None:
    b = Replica("b")
    delta = PNCounter().increment("a", 5)
    from rumor.crdt import encode

    group = DeltaGroup.build(("a", 1), 1, [DeltaEntry("k", "counter", encode(delta))])
    b.core.handle_message(pack_push([group.raw]), "c", 0.0)
    for t in range(10):
        for target, _ in b.core.tick(t * 1.0, ["a", "b", "c", "d"]).pushes:
            assert target == "d"


def test_each_node_forwards_a_group_a_bounded_number_of_times() -> None:
    config = ReplicationConfig()
    b = Replica("b", config)
    a = Replica("a", config)
    a.keyspace.apply_local("k", Increment(amount=1))
    live = [f"n{i}" for i in range(20)] + ["a", "b"]
    payload = a.core.tick(0.0, live).pushes[0][1]
    b.core.handle_message(payload, "a", 0.0)
    b.core.handle_message(payload, "n1", 0.0)  # a duplicate via another path: not forwarded again
    rounds_with_group = sum(bool(b.core.tick(t * 1.0, live).pushes) for t in range(50))
    assert rounds_with_group == config.transmits(len(live))
    assert b.core.disseminator.stats.groups_duplicate == 1


def test_push_messages_are_bounded_and_a_backlog_degrades_into_anti_entropy() -> None:
    config = ReplicationConfig(max_push_bytes=4096, max_backlog_bytes=16 * 1024)
    a = Replica("a", config)
    for i in range(2000):
        a.keyspace.apply_local(f"k{i}", SetChange(add=(f"element-{i}",)))
    result = a.core.tick(0.0, ["a", "b", "c"])
    assert result.pushes and all(len(p) <= 4096 for _, p in result.pushes)
    assert a.core.disseminator.backlog_bytes <= 16 * 1024
    assert a.core.disseminator.stats.dropped_groups > 0
    assert result.sync_with in {"b", "c"}  # the dropped groups are left to an anti-entropy session, started now
    b = Replica("b", config)
    for _, payload in result.pushes:
        b.core.handle_message(payload, "a", 0.0)
    a.core.digests.flush(10**6)
    sync_pair(b.core, a.core, 1.0)
    assert states(a.keyspace) == states(b.keyspace)


def test_oversized_delta_is_left_to_anti_entropy() -> None:
    config = ReplicationConfig(max_push_bytes=2048)
    a = Replica("a", config)
    a.keyspace.apply_local("big", SetChange(add=tuple(range(2000))))
    result = a.core.tick(0.0, ["a", "b"])
    assert result.pushes == []
    assert "big" in a.core.disseminator.overflow_keys and result.sync_with == "b"


@pytest.mark.parametrize("garbage", [b"", b"\x60", b"\x60\x91\x01", b"\x60\x91\x94\xa1a\x01\x00\x90", b"\x99abc",
                                     b"\x60\x91\x94\xa1z\x01\x01\x91\x93\xa1k\xa7counter\xc4\x01x"])
def test_garbage_is_counted_and_dropped(garbage: bytes) -> None:
    a = Replica("a")
    a.core.handle_message(garbage, "x", 0.0)
    assert sum(a.core.stats.rejected.values()) == 1
    assert len(a.keyspace) == 0


def test_random_bytes_raise_only_protocol_errors() -> None:
    rng = random.Random(7)
    a = Replica("a")
    for _ in range(300):
        payload = bytes([rng.choice(list(Kind))]) + rng.randbytes(rng.randrange(0, 40))
        with contextlib.suppress(ReplicationProtocolError):
            a.core.handle_request(payload, "x", 0.0)


# -- coverage and GC -----------------------------------------------------------------------------------------------


def test_coverage_advances_contiguously_and_dedupes() -> None:
    cov = Coverage(("me", 1), 0.0)
    assert cov.record(("o", 1), 2, 0.0)
    assert cov.vector().get(("o", 1), 0) == 0
    assert cov.record(("o", 1), 1, 0.0)
    assert cov.vector()[("o", 1)] == 2
    assert not cov.record(("o", 1), 2, 0.0)


def test_gc_waits_for_every_live_member_then_compacts() -> None:
    gone = ("d", 1)
    cov = Coverage(("a", 1), 0.0)
    for seq in (1, 2, 3):
        cov.record(gone, seq, 0.0)
    live = {"a", "b", "c"}
    cov.observe_live(live | {"d"}, 0.0)
    cov.note_ack("b", {gone: 3}, [])
    cov.note_ack("c", {gone: 2}, [])
    # d is still live: nothing to collect whatever the acks say.
    assert cov.collect(live | {"d"}, 100.0, grace_s=30.0) == []
    # d departed, but within the grace period.
    assert cov.collect(live, 10.0, grace_s=30.0) == []
    # d departed long ago, but c has not acknowledged d's group 3: c still needs it.
    assert cov.collect(live, 100.0, grace_s=30.0) == []
    assert cov.blockers(gone, live) == ["c"]
    cov.note_ack("c", {gone: 3}, [])
    assert cov.collect(live, 100.0, grace_s=30.0) == [gone]
    assert gone not in cov.origins() and all(gone not in v for v in cov.acked.values())
    # A straggler from the retired origin is still merged by the caller but neither tracked nor forwarded.
    assert not cov.record(gone, 4, 101.0)
    assert gone not in cov.origins()


def test_gc_counts_a_peer_that_retired_the_origin_itself_and_old_epochs() -> None:
    cov = Coverage(("a", 1), 0.0)
    cov.record(("b", 1), 1, 0.0)
    cov.record(("b", 2), 1, 0.0)  # b restarted: epoch 1 is superseded even though b is live
    live = {"a", "b", "c"}
    cov.observe_live(live, 0.0)
    cov.note_ack("b", {("b", 1): 1, ("b", 2): 1}, [])
    cov.note_ack("c", {}, [("b", 1)])
    assert cov.collect(live, 1.0, grace_s=30.0) == [("b", 1)]
    assert ("b", 2) in cov.origins()


def test_a_member_that_never_reported_blocks_gc() -> None:
    cov = Coverage(("a", 1), 0.0)
    cov.record(("d", 1), 1, 0.0)
    assert cov.collect({"a", "b"}, 1000.0, grace_s=1.0) == []
    assert cov.blockers(("d", 1), {"a", "b"}) == ["b"]
