"""Big received states joined off the event loop (`server.replication.big_merges`): correct joins on both ways
(adopt, diff), local writes made while the worker runs are kept, a failure is reported and changes nothing, and a
session concludes (and claims) only once its merges are done. The worker is a real thread; tests await its
futures, never sleep."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from replication_helpers import Replica

from rumor.crdt import ORSet, encode
from rumor.server.config import ServerConfig
from rumor.server.node import Node
from rumor.server.offload import Offloader
from rumor.server.replication import ReplicationConfig
from rumor.server.replication import big_merges as big_merges_module
from rumor.server.replication.big_merges import OffloadedMerges
from rumor.server.replication.replica import ReplicaCore
from rumor.server.replication.wire import state_blob
from rumor.server.updates import SetChange

MIN_BYTES = 1024
BIG = 3000  # elements: about 15 KB encoded, well past MIN_BYTES


def offloading(replica: Replica, reported: list[BaseException] | None = None) -> OffloadedMerges:
    """Wires the replica's core as the runtime does, with a low threshold so test-sized states count as big."""
    sink = reported if reported is not None else []
    merges = OffloadedMerges(replica.core, Offloader(min_bytes=MIN_BYTES), sink.append)
    replica.core.big_merges = merges
    return merges


def big_set(replica_id: str, elements: range | list[str]) -> ORSet:
    state = ORSet()
    state.merge(state.add_all(replica_id, elements))
    return state


def value(replica: Replica, key: str = "big") -> Any:
    item = replica.keyspace.item(key)
    return None if item is None else set(item.value)


async def test_a_big_state_for_a_key_we_lack_is_adopted_off_the_loop() -> None:
    b = Replica("b")
    merges = offloading(b)
    received = big_set("a", range(BIG))
    b.core.merge_blob(b"big", state_blob("set", encode(received)))
    assert b.keyspace.entry("big") is None  # nothing merged on the loop yet: the worker has it
    assert await merges.drain() == []
    assert value(b) == set(range(BIG))
    assert merges.offloader.jobs == 1 and merges.done == 1
    assert b.core.digests.dirty == 0  # the digest came with the join: no big encode left for the loop
    assert b.core.digests.tree.get(b"big") is not None


async def test_a_big_state_joins_a_small_one_and_a_local_write_meanwhile_is_kept() -> None:
    b = Replica("b")
    merges = offloading(b)
    b.keyspace.apply_local("big", SetChange(add=("mine",)))
    received = big_set("a", range(BIG))
    b.core.merge_blob(b"big", state_blob("set", encode(received)))
    # a client's write lands while the worker joins (synchronously here: before the loop can finish the job)
    b.keyspace.apply_local("big", SetChange(add=("during",)))
    assert await merges.drain() == []
    assert value(b) == {*range(BIG), "mine", "during"}


async def test_a_big_state_into_a_big_one_merges_only_the_diff_and_keeps_local_writes() -> None:
    b = Replica("b")
    merges = offloading(b)
    shared = big_set("a", range(BIG))
    b.core.merge_blob(b"big", state_blob("set", encode(shared)))
    assert await merges.drain() == []
    b.core.digests.flush(10)
    ours = b.keyspace.entry("big")
    assert ours is not None and ours.decoded  # held decoded and big: the diff way
    newer = shared.copy()
    newer.merge(newer.add_all("a", [f"new-{i}" for i in range(5)]))
    newer.merge(newer.remove(0))
    b.core.merge_blob(b"big", state_blob("set", encode(newer)))
    b.keyspace.apply_local("big", SetChange(add=("during",)))
    assert await merges.drain() == []
    assert value(b) == ({*range(1, BIG), "during"} | {f"new-{i}" for i in range(5)})
    assert b.core.digests.dirty == 1  # rehashed later, like any merge


async def test_a_state_that_does_not_decode_is_counted_and_changes_nothing() -> None:
    b = Replica("b")
    reported: list[BaseException] = []
    merges = offloading(b, reported)
    b.keyspace.apply_local("big", SetChange(add=("mine",)))
    garbled = bytearray(encode(big_set("a", range(BIG))))
    garbled[len(garbled) // 2] ^= 0xFF
    b.core.merge_blob(b"big", state_blob("set", bytes(garbled)))
    failures = await merges.drain()
    assert len(failures) == 1 and b.core.stats.rejected == {"bad_state": 1}
    assert value(b) == {"mine"}
    assert reported == []  # the peer's bad input, not a bug: counted, not reported


async def test_a_failing_worker_is_reported_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_job: Any) -> Any:
        raise RuntimeError("worker bug")

    monkeypatch.setattr(big_merges_module, "work", broken)
    b = Replica("b")
    reported: list[BaseException] = []
    merges = offloading(b, reported)
    b.keyspace.apply_local("big", SetChange(add=("mine",)))
    before = encode(b.keyspace.entry("big").state)  # type: ignore[union-attr]
    b.core.merge_blob(b"big", state_blob("set", encode(big_set("a", range(BIG)))))
    failures = await merges.drain()
    assert [str(f) for f in failures] == ["worker bug"] and [str(r) for r in reported] == ["worker bug"]
    assert b.core.stats.rejected == {"merge_failed": 1}
    assert encode(b.keyspace.entry("big").state) == before  # type: ignore[union-attr]
    assert await merges.drain() == []  # reported once


async def drive(initiator: ReplicaCore, responder: ReplicaCore, now: float) -> Any:
    """One session as `GossipReplication._sync` and `serve` run it: every reply's merges awaited before going on."""
    session, message = initiator.start_sync(responder.node_id, now, peer_reads_contexts=True)
    request: bytes | None = message
    while request is not None:
        reply = responder.handle_request(request, initiator.node_id, now)
        if responder.big_merges is not None:
            assert await responder.big_merges.drain() == []
        request = session.receive(reply, now)
        assert initiator.big_merges is not None
        failures = await initiator.big_merges.drain()
        assert failures == []
        session.merges_settled(now)
    initiator.sync_finished(session, now)
    return session


async def test_a_session_concludes_only_once_its_big_merges_are_done() -> None:
    a, b = Replica("a", ReplicationConfig(), seed=1), Replica("b", ReplicationConfig(), seed=2)
    offloading(a)
    offloading(b)
    a.keyspace.apply_local("big", SetChange(add=tuple(f"a{i}" for i in range(BIG))))
    b.keyspace.apply_local("big", SetChange(add=("b0",)))
    b.keyspace.apply_local("small", SetChange(add=("x",)))
    session = await drive(b.core, a.core, 1.0)
    assert session.outcome is not None and session.outcome.complete
    assert b.core.big_merges is not None and b.core.big_merges.done >= 1  # a's big set came through the worker
    assert value(a) == value(b) == {*(f"a{i}" for i in range(BIG)), "b0"}
    assert value(a, "small") == {"x"}


async def test_a_session_whose_big_merge_fails_is_not_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Replica("a", seed=1), Replica("b", seed=2)
    offloading(a)
    reported: list[BaseException] = []
    offloading(b, reported)
    a.keyspace.apply_local("big", SetChange(add=tuple(f"a{i}" for i in range(BIG))))

    def broken(_job: Any) -> Any:
        raise RuntimeError("worker bug")

    monkeypatch.setattr(big_merges_module, "work", broken)
    session, request = b.core.start_sync("a", 1.0, peer_reads_contexts=True)
    message: bytes | None = request
    while message is not None:
        message = session.receive(a.core.handle_request(message, "b", 1.0), 1.0)
        assert b.core.big_merges is not None
        failures = await b.core.big_merges.drain()
        if failures:
            session.fail(str(failures[0]), 1.0)
            break
        session.merges_settled(1.0)
    assert session.outcome is not None and not session.outcome.complete and session.done_message is None
    assert b.keyspace.entry("big") is None and len(reported) == 1


async def test_an_adopted_state_survives_a_restart(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path, node_id="n1")
    received = big_set("a", range(BIG))
    async with Node(config) as node:
        await node.update("big", SetChange(add=("mine",)))
        joined = received.copy()
        joined.merge(node.keyspace.entry("big").state)  # type: ignore[union-attr]
        node.adopt_remote_nowait("big", "set", joined, encode(received))
        await node.storage.flush()
    async with Node(config) as node:
        item = node.keyspace.item("big")
        assert item is not None and set(item.value) == {*range(BIG), "mine"}


async def test_inline_baseline_takes_no_worker() -> None:
    b = Replica("b")
    merges = OffloadedMerges(b.core, Offloader(enabled=False), lambda exc: None)
    b.core.big_merges = merges
    b.core.merge_blob(b"big", state_blob("set", encode(big_set("a", range(BIG)))))
    assert value(b) == set(range(BIG)) and merges.offloader.jobs == 0
    await asyncio.sleep(0)
