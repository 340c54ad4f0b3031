"""Big keys' digests and diffs made off the event loop (`server.replication.prepared`): a digest waits for its blob
and is then exact, a change while the worker encodes discards the blob (the key stays dirty, a later flush gets it
right), a failure is reported, and a session between two offloading replicas converges with its big diffs made
on the worker. The worker is a real thread; tests await its tasks, never sleep."""

from __future__ import annotations

from typing import Any

from replication_helpers import Replica

from rumor.crdt import encode
from rumor.server.offload import Offloader
from rumor.server.replication import prepared as prepared_module
from rumor.server.replication.replica import ReplicaCore
from rumor.server.replication.wire import Kind, kind_of, parse_step, state_blob
from rumor.server.updates import SetChange

MIN_BYTES = 1024
BIG = 3000


def offloading(replica: Replica, reported: list[BaseException] | None = None) -> ReplicaCore:
    sink = reported if reported is not None else []
    replica.core.offload_to(Offloader(min_bytes=MIN_BYTES), sink.append)
    return replica.core


def big_replica(name: str = "a", reported: list[BaseException] | None = None) -> Replica:
    replica = Replica(name)
    core = offloading(replica, reported)
    replica.keyspace.apply_local("big", SetChange(add=tuple(f"{name}{i}" for i in range(BIG))))
    core.digests.flush(10)  # first digest inline: its size was not known yet
    assert core.digests.dirty == 0 and core.digests.tree.size_of(b"big") >= MIN_BYTES
    return replica


def current_blob(replica: Replica) -> bytes:
    entry = replica.keyspace.entry("big")
    assert entry is not None
    return state_blob("set", encode(entry.state))


async def finish_encoding(core: ReplicaCore) -> None:
    assert core.prepared is not None
    for task in list(core.prepared._encoding.values()):
        await task


async def test_a_big_keys_digest_waits_for_its_blob_encoded_off_the_loop() -> None:
    a = big_replica()
    core = a.core
    a.keyspace.apply_local("big", SetChange(add=("one-more",)))
    assert core.digests.flush(10) == 0 and core.digests.dirty == 1  # deferred: the worker encodes it
    await finish_encoding(core)
    assert core.digests.dirty == 0
    blob = current_blob(a)
    assert core.digests.tree.size_of(b"big") == len(blob)
    assert core.encode_key("big") == blob  # kept for senders
    assert core.prepared is not None and core.prepared.encoded == 1


async def test_a_change_while_encoding_discards_the_blob_and_a_later_flush_gets_it_right() -> None:
    a = big_replica()
    core = a.core
    a.keyspace.apply_local("big", SetChange(add=("one-more",)))
    core.digests.flush(10)
    a.keyspace.apply_local("big", SetChange(add=("during",)))  # lands while the worker encodes
    await finish_encoding(core)
    assert core.digests.dirty == 1 and core.prepared is not None and core.prepared.encoded == 0
    core.digests.flush(10)
    assert not core.prepared.encoding("big")  # not restarted at once: it waits twice the discarded encode's time
    core.prepared._retry_at.clear()  # as if that time had passed
    core.digests.flush(10)
    await finish_encoding(core)
    assert core.digests.dirty == 0 and core.encode_key("big") == current_blob(a)


async def test_a_failing_encode_is_reported_and_the_key_stays_dirty(monkeypatch: Any) -> None:
    def broken(_state: Any) -> bytes:
        raise RuntimeError("encoder bug")

    reported: list[BaseException] = []
    a = big_replica(reported=reported)
    monkeypatch.setattr(prepared_module, "encode", broken)
    a.keyspace.apply_local("big", SetChange(add=("one-more",)))
    a.core.digests.flush(10)
    await finish_encoding(a.core)
    assert [str(r) for r in reported] == ["encoder bug"] and a.core.digests.dirty == 1


async def drive(initiator: ReplicaCore, responder: ReplicaCore, now: float) -> Any:
    """One session as the runtime runs it: each STEP's diffs prepared first, each reply's merges awaited."""
    session, message = initiator.start_sync(responder.node_id, now, peer_reads_contexts=True)
    request: bytes | None = message
    while request is not None:
        slots = await prepare(responder, request)
        reply = responder.handle_request(request, initiator.node_id, now)
        assert responder.prepared_diffs is not None and responder.big_merges is not None
        responder.prepared_diffs.discard(slots)
        assert await responder.big_merges.drain() == []
        slots = await prepare(initiator, reply)
        request = session.receive(reply, now)
        assert initiator.prepared_diffs is not None and initiator.big_merges is not None
        initiator.prepared_diffs.discard(slots)
        assert await initiator.big_merges.drain() == []
        session.merges_settled(now)
    initiator.sync_finished(session, now)
    return session


async def prepare(core: ReplicaCore, message: bytes) -> list[Any]:
    if kind_of(message) is not Kind.STEP:
        return []
    assert core.prepared_diffs is not None
    return await core.prepared_diffs.prepare(parse_step(message))


async def test_a_session_between_big_keys_makes_its_diffs_off_the_loop_and_converges() -> None:
    a, b = big_replica("a"), big_replica("b")
    shared = tuple(f"s{i}" for i in range(BIG))
    a.keyspace.apply_local("big", SetChange(add=shared))
    b.keyspace.merge_remote("big", "set", a.keyspace.entry("big").state.copy())  # type: ignore[union-attr]
    a.core.digests.flush(10)
    b.core.digests.flush(10)
    await finish_encoding(a.core)
    await finish_encoding(b.core)
    session = await drive(b.core, a.core, 1.0)
    assert session.outcome is not None and session.outcome.complete
    assert current_blob(a) == current_blob(b)
    assert a.core.prepared_diffs is not None and b.core.prepared_diffs is not None
    assert a.core.prepared_diffs.prepared + b.core.prepared_diffs.prepared >= 1  # context rows answered off-loop
