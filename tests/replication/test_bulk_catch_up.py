"""A replica far behind its peer catches up by a bulk walk: states of keys it lacks are installed as received (no
merge), those it holds are merged, and the session then descends, so it ends complete and converged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from replication_helpers import Replica, states

from rumor.gossip.anti_entropy import AntiEntropyMessageType, MerkleTree
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.replica import sync_pair
from rumor.server.replication.sync import BULK_DUTY, BulkPacer
from rumor.server.updates import Increment, RegisterWrite, SetChange


def serve_forged(replica: Replica, forged_key: bytes, forge: Callable[[bytes], bytes]) -> tuple[Any, Any]:
    """From now on ``replica`` answers with ``forge(state)`` for ``forged_key``, through its one-key and its batch
    reads alike; returns the real pair, to put back."""
    responder = replica.core.responder
    real = (responder._replica.get_state, responder._get_states)
    read = replica.core.get_blob

    def forged(key: bytes) -> bytes | None:
        blob = read(key)
        return forge(blob) if blob is not None and key == forged_key else blob

    responder._replica.get_state = forged
    responder._get_states = lambda keys: {key: blob for key in keys if (blob := forged(key)) is not None}
    return real

def _fill(replica: Replica, count: int, start: int = 0, salt: str = "") -> None:
    for i in range(start, start + count):
        update = [Increment(amount=1), SetChange(add=(f"e{salt}",)), RegisterWrite(value=f"v{i}{salt}")][i % 3]
        replica.keyspace.apply_local(f"k{i:06d}", update)
    replica.core.digests.flush(10**9)


def _kinds(messages: list[bytes]) -> list[int]:
    # replication STEP (0x63) messages carry the anti-entropy type byte next
    return [m[1] for m in messages if m[:1] == b"\x63"]


def test_an_empty_replica_walks_in_bulk_and_ends_converged() -> None:
    config = ReplicationConfig(sync_interval_s=1e9)
    full, empty = Replica("full", config, 1), Replica("empty", config, 2)
    _fill(full, 3000)
    seen: list[bytes] = []
    session = sync_pair(empty.core, full.core, 1.0, observe=seen.append, bulk=True)
    assert session.outcome is not None and session.outcome.complete
    assert session.outcome.states_installed == 3000
    assert states(empty.keyspace) == states(full.keyspace)
    assert empty.core.digests.tree.root() == full.core.digests.tree.root()
    assert AntiEntropyMessageType.BULK in _kinds(seen)
    # installed keys stay bytes until read, and read back as the peer's values
    entry = empty.keyspace.entry("k000002")
    assert entry is not None and not entry.decoded
    assert empty.keyspace.item("k000002") == full.keyspace.item("k000002")


def test_without_the_peers_word_a_far_behind_replica_descends_as_before() -> None:
    config = ReplicationConfig(sync_interval_s=1e9, sync_max_rounds=10_000)
    full, empty = Replica("full", config, 1), Replica("empty", config, 2)
    _fill(full, 1500)
    seen: list[bytes] = []
    session = sync_pair(empty.core, full.core, 1.0, observe=seen.append, bulk=False)
    assert session.outcome is not None and session.outcome.complete and session.outcome.states_installed == 0
    assert AntiEntropyMessageType.BULK not in _kinds(seen)
    assert states(empty.keyspace) == states(full.keyspace)


def test_a_half_caught_up_replica_merges_what_it_holds_and_gets_only_differing_leaves() -> None:
    config = ReplicationConfig(sync_interval_s=1e9)
    full, behind = Replica("full", config, 1), Replica("behind", config, 2)
    _fill(full, 4000)
    _fill(behind, 1000, salt="x")  # the same keys as full's first 1000, with other states: merged, not installed
    _fill(behind, 10, start=90_000)  # keys full lacks: the descent after the walk sends them
    session = sync_pair(behind.core, full.core, 1.0, bulk=True)
    assert session.outcome is not None and session.outcome.complete
    assert session.outcome.states_installed == 3000
    reverse = sync_pair(full.core, behind.core, 2.0, bulk=True)
    assert reverse.outcome is not None and reverse.outcome.complete
    assert states(behind.keyspace) == states(full.keyspace)


def test_a_forged_state_in_a_bulk_reply_is_refused_and_changes_nothing() -> None:
    config = ReplicationConfig(sync_interval_s=1e9)
    full, empty = Replica("full", config, 1), Replica("empty", config, 2)
    _fill(full, 2000)
    real_reads = serve_forged(full, b"k001234", lambda blob: blob[:-1] + bytes([blob[-1] ^ 0x55]))
    before = empty.core.digests.tree.root()
    session = sync_pair(empty.core, full.core, 1.0, bulk=True)
    assert session.outcome is not None and not session.outcome.complete
    assert "state_rejected" in (session.outcome.error or "") or "rejected" in (session.outcome.error or "")
    # the reply holding the forged row stored nothing; earlier replies' rows stay (each was whole and valid)
    assert "k001234" not in empty.keyspace
    held = len(empty.keyspace)
    assert held < 2000 and len(empty.core.digests.tree) == held
    assert held == 0 or empty.core.digests.tree.root() != before
    full.core.responder._replica.get_state, full.core.responder._get_states = real_reads
    again = sync_pair(empty.core, full.core, 2.0, bulk=True)
    assert again.outcome is not None and again.outcome.complete
    assert states(empty.keyspace) == states(full.keyspace)


@pytest.mark.parametrize("garbage", [{"c": 5, "i": 0}, {"c": 0, "i": 0, "k": []}, {"c": 10**9, "i": 0, "k": []},
                                     {"c": 3, "i": 0, "k": [[b"a", b"x"], [b"a", b"y"]]}, [1, 2]])
def test_a_bulk_reply_that_breaks_the_protocol_is_refused(garbage: object) -> None:
    from rumor.gossip.anti_entropy import AntiEntropyProtocolError, BulkWalk
    walk = BulkWalk(MerkleTree(), salt=0, width=3)
    with pytest.raises(AntiEntropyProtocolError):
        walk.absorb(garbage)


def test_only_members_that_say_they_read_bulk_walks_are_sent_one() -> None:
    import msgpack

    from rumor.server.replication.member_meta import advertised, reads_bulk
    assert reads_bulk(msgpack.packb(advertised()))
    older = msgpack.packb({"reads": ["ae-cx", "cv-probe"]})  # what the previous release published
    assert not reads_bulk(older) and not reads_bulk(b"") and not reads_bulk(b"\xc1garbage")
    config = ReplicationConfig(sync_interval_s=1e9, sync_max_rounds=10_000)
    full, empty = Replica("full", config, 1), Replica("empty", config, 2)
    _fill(full, 1500)
    asked: list[str] = []
    empty.core.peer_reads_bulk = lambda member: asked.append(member) or False
    session, message = empty.core.start_sync("full", 1.0)
    sent: list[bytes] = []
    while message is not None:
        sent.append(message)
        message = session.receive(full.core.handle_request(message, "empty", 1.0), 1.0)
    assert asked == ["full"] and AntiEntropyMessageType.BULK not in _kinds(sent)
    assert states(empty.keyspace) == states(full.keyspace)


def test_a_walking_replica_turns_away_other_sessions_which_change_nothing() -> None:
    config = ReplicationConfig(sync_interval_s=1e9)
    full, empty, other = Replica("full", config, 1), Replica("empty", config, 2), Replica("other", config, 3)
    _fill(full, 3000)
    _fill(other, 3000)
    session, message = empty.core.start_sync("full", 1.0, peer_reads_bulk=True)
    for _ in range(3):  # OPEN, then the walk's first requests
        assert message is not None
        message = session.receive(full.core.handle_request(message, "empty", 1.0), 1.0)
    assert session.walking
    held = states(empty.keyspace)
    turned = sync_pair(other.core, empty.core, 1.0)
    assert turned.outcome is not None and not turned.outcome.complete
    assert "catching_up" in (turned.outcome.error or "")
    assert states(empty.keyspace) == held and turned.outcome.states_sent == 0
    while message is not None:
        message = session.receive(full.core.handle_request(message, "empty", 1.0), 1.0)
    empty.core.sync_finished(session, 1.0)
    assert session.outcome is not None and session.outcome.complete
    assert not session.walking and sync_pair(other.core, empty.core, 2.0).outcome.complete  # type: ignore[union-attr]


def test_an_empty_replica_turns_away_a_far_ahead_peer_that_reads_walks_and_walks_itself_at_once() -> None:
    config = ReplicationConfig(sync_interval_s=1e9)
    full, empty = Replica("full", config, 1), Replica("empty", config, 2)
    _fill(full, 3000)
    empty.core.next_sync_at = 1e9
    turned = sync_pair(full.core, empty.core, 5.0)  # the empty one's core knows nothing of full: it descends
    assert turned.outcome is not None and turned.outcome.complete and turned.outcome.states_sent == 3000
    again, other = Replica("again", config, 3), Replica("other", config, 4)
    _fill(other, 3000)
    again.core.next_sync_at = 1e9
    again.core.peer_reads_bulk = lambda member: member == "other"
    refused = sync_pair(other.core, again.core, 5.0)
    assert refused.outcome is not None and not refused.outcome.complete
    assert "catching_up" in (refused.outcome.error or "")
    assert len(again.keyspace) == 0 and again.core.next_sync_at == 5.0  # its own session, a walk, comes next
    walked = sync_pair(again.core, other.core, 6.0, bulk=True)
    assert walked.outcome is not None and walked.outcome.complete and walked.outcome.states_installed == 3000


async def test_a_state_refused_by_the_off_loop_check_ends_the_session_with_nothing_of_its_reply_stored() -> None:
    from rumor.server.replication.sync import check_states
    config = ReplicationConfig(sync_interval_s=1e9)
    full, empty = Replica("full", config, 1), Replica("empty", config, 2)
    _fill(full, 3000)
    serve_forged(full, b"k002999", lambda blob: blob[:-2] + b"\xff\xff")
    offloaded: list[int] = []

    async def offload(rows: list[tuple[bytes, bytes]]) -> tuple[bytes, str] | None:
        offloaded.append(len(rows))
        return check_states(rows)  # what the runtime runs in a worker process

    session, message = empty.core.start_sync("full", 1.0, peer_reads_bulk=True)
    session.max_waiting = 1
    while message is not None:
        reply = full.core.handle_request(message, "empty", 1.0)
        await session.settle(offload, 1.0)
        message = session.receive(reply, 1.0)
    await session.settle(offload, 1.0)
    empty.core.sync_finished(session, 1.0)
    assert offloaded and session.outcome is not None and not session.outcome.complete
    assert "k002999" in (session.outcome.error or "")
    assert "k002999" not in empty.keyspace and 0 < len(empty.keyspace) < 3000
    assert len(empty.core.digests.tree) == len(empty.keyspace)


async def test_settle_says_when_each_reply_is_stored_so_the_walk_goes_on_before_all_are() -> None:
    """A driver that is `max_waiting` replies ahead waits for one of them to be stored (`reply_stored`), not for
    all: the walk's next request goes out while the others are still being stored."""
    import asyncio

    from rumor.server.replication.sync import STORE_ROWS_AT_ONCE, check_states
    config = ReplicationConfig(sync_interval_s=1e9)
    full, empty = Replica("full", config, 1), Replica("empty", config, 2)
    _fill(full, 20_000)
    session, message = empty.core.start_sync("full", 1.0, peer_reads_bulk=True)
    for replies in range(8):  # the OPENED and four replies stored as they come (the walk's span grows), then three
        session.max_waiting = 0 if replies < 5 else 3
        assert message is not None
        message = session.receive(full.core.handle_request(message, "empty", 1.0), 1.0)
    assert session.waiting == 3 and session.walking

    sizes: list[int] = []

    async def offload(rows: list[tuple[bytes, bytes]]) -> tuple[bytes, str] | None:
        sizes.append(len(rows))
        return check_states(rows)

    async def next_stored() -> None:
        stored = asyncio.ensure_future(session.reply_stored())
        await asyncio.wait((stored, storing), timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert stored.done(), "settle ended (or hung) without saying a reply was stored"

    storing = asyncio.ensure_future(session.settle(offload, 1.0))
    await next_stored()
    assert min(sizes) > STORE_ROWS_AT_ONCE, "each reply is stored in several parts, the loop free between them"
    assert session.waiting == 2 and not storing.done(), "one reply stored, the rest still under way"
    await storing
    assert session.waiting == 0 and len(empty.keyspace) == empty.core.stats.states_installed > 0


async def test_bulk_answers_are_paced_before_the_next_one_whoever_asks_not_after_the_reply() -> None:
    """A responder answers bulk walks at most `BULK_DUTY` of the time: an answer that took t keeps the next one from
    starting for the rest of its share, while the reply itself goes out at once (a pause after each reply made
    every round trip of a walk that much longer, and two walkers took the loop all the time between them)."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = BulkPacer(lambda: now[0], sleep)
    log: list[tuple[str, float]] = []

    async def answer(name: str, spent: float) -> None:
        started = await pacer.turn()
        log.append((f"{name} starts", now[0]))
        now[0] += spent  # the answer's work
        pacer.answered(started)
        log.append((f"{name} replies", now[0]))

    await asyncio.gather(answer("a", 0.016), answer("b", 0.010))
    rest = 0.016 * (1 - BULK_DUTY) / BULK_DUTY
    assert log == [("a starts", 0.0), ("a replies", 0.016), ("b starts", pytest.approx(0.016 + rest)),
                   ("b replies", pytest.approx(0.026 + rest))]
    assert slept == [pytest.approx(rest)]
    now[0] += 1.0  # a request that comes after the rest is answered at once
    await answer("c", 0.01)
    assert slept == [pytest.approx(rest)]
    with pytest.raises(RuntimeError):  # an answer that fails still opens the gate for the next
        started = await pacer.turn()
        try:
            raise RuntimeError("the answer failed")
        finally:
            pacer.answered(started)
    await asyncio.wait_for(pacer.turn(), 1.0)
