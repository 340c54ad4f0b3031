"""Anti-entropy between two in-process replicas: cost follows the differences, messages stay bounded."""

from __future__ import annotations

import pytest
from replication_helpers import Replica, states

from rumor.crdt import ORSet, encode
from rumor.server.replication import ReplicationConfig
from rumor.server.replication.replica import sync_pair
from rumor.server.updates import Increment, RegisterWrite, SetChange


def _loaded_pair(n_keys: int) -> tuple[Replica, Replica]:
    a, b = Replica("a", seed=1), Replica("b", seed=2)
    for i in range(n_keys):
        a.keyspace.apply_local(f"k{i:06d}", Increment(amount=i + 1))
    # Digests are built lazily, digest_batch_keys per tick or session; then b copies a by anti-entropy.
    a.core.digests.flush(10**9)
    sync_pair(b.core, a.core, 0.0)
    b.core.digests.flush(10**9)
    assert states(a.keyspace) == states(b.keyspace)
    return a, b


def test_converged_pair_exchanges_only_digests() -> None:
    a, b = _loaded_pair(5_000)
    sizes: list[int] = []
    session = sync_pair(a.core, b.core, 1.0, observe=lambda m: sizes.append(len(m)))
    assert session.outcome is not None and session.outcome.complete
    assert session.outcome.states_sent == 0 and session.outcome.states_received == 0
    assert sum(sizes) < 2048, sizes
    assert len(sizes) <= 3  # OPEN, OPENED (IN_SYNC), DONE


def test_d_differences_cost_about_d_keys() -> None:
    a, b = _loaded_pair(10_000)
    changed = [f"k{i:06d}" for i in range(0, 10_000, 100)]  # 100 keys
    for key in changed:
        a.keyspace.apply_local(key, Increment(amount=7))
    rehashed_before = a.core.digests.rehashed
    sizes: list[int] = []
    session = sync_pair(b.core, a.core, 2.0, observe=lambda m: sizes.append(len(m)))
    assert session.outcome is not None and session.outcome.complete
    assert states(a.keyspace) == states(b.keyspace)
    # Only what changed was rehashed (once when flushed, once when the peer's version was merged in): never the
    # whole keyspace.
    assert a.core.digests.rehashed - rehashed_before <= 2 * len(changed)
    diff_bytes = sum(len(a.core.encode_key(k) or b"") for k in changed)
    full_bytes = sum(len(a.core.encode_key(k) or b"") for k in a.keyspace)
    assert session.outcome.states_received == len(changed)
    assert sum(sizes) < 4 * diff_bytes + 16_384, (sum(sizes), diff_bytes)
    assert sum(sizes) < 0.05 * full_bytes


def test_both_directions_repaired_in_one_session() -> None:
    a, b = _loaded_pair(1_000)
    a.keyspace.apply_local("only-a", RegisterWrite(value="x"))
    b.keyspace.apply_local("only-b", SetChange(add=(1, 2)))
    a.keyspace.apply_local("k000001", Increment(amount=1))
    b.keyspace.apply_local("k000001", Increment(amount=2))  # concurrent: both sides' states must end up joined
    session = sync_pair(a.core, b.core, 1.0)
    assert session.outcome is not None and session.outcome.complete
    assert states(a.keyspace) == states(b.keyspace)
    item = a.keyspace.item("k000001")
    assert item is not None and item.value == 2 + 3


@pytest.mark.parametrize(("elements", "message_bytes"), [
    (100_000, 32 * 1024),
    pytest.param(1_000_000, ReplicationConfig().sync_message_bytes, marks=pytest.mark.slow),
])
def test_large_set_syncs_in_bounded_chunks(elements: int, message_bytes: int) -> None:
    config = ReplicationConfig(sync_message_bytes=message_bytes)
    a, b = Replica("a", config, seed=1), Replica("b", config, seed=2)
    big = ORSet()
    big.merge(big.add_all("a", range(elements)))
    a.keyspace.merge_remote("big", "set", big)
    a.core.on_changed("big")
    sizes: list[int] = []
    session = sync_pair(b.core, a.core, 1.0, observe=lambda m: sizes.append(len(m)))
    assert session.outcome is not None and session.outcome.complete
    assert max(sizes) <= config.sync_message_bytes
    entry = b.keyspace.entry("big")
    assert entry is not None and len(entry.state) == elements and encode(entry.state) == encode(big)
    assert len(sizes) > len(encode(big)) // config.sync_message_bytes  # it really went in pieces


def test_lazy_digests_rehash_a_hot_key_once() -> None:
    a = Replica("a")
    for _ in range(500):
        a.keyspace.apply_local("hot", Increment(amount=1))
    assert a.core.digests.dirty == 1
    assert a.core.digests.flush(100) == 1
    assert a.core.digests.rehashed == 1


def test_background_rehash_takes_a_key_once_it_settled_and_spreads_over_ticks() -> None:
    config = ReplicationConfig(digest_settle_s=1.0, push_interval_s=0.25)  # binary-exact tick times
    a = Replica("a", config)
    a.core.tick(0.0, ["a"])
    rehashed: list[int] = []
    for step in range(1, 13):  # 3 s of ticks; "hot" is written before every one of them, "cold" once early
        a.keyspace.apply_local("hot", Increment(amount=1))
        if step == 2:
            a.keyspace.apply_local("cold", Increment(amount=1))
        before = a.core.digests.rehashed
        a.core.tick(step * 0.25, ["a"])
        rehashed.append(a.core.digests.rehashed - before)
    # hot's marks are dated 0, 1.0, 2.0 (the tick before each first write after a rehash): rehashed at 1, 2, 3 s;
    # cold's (dated 0.25) at 1.25 s. 12 writes to hot, 3 encodings.
    assert rehashed == [0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1]
    a.keyspace.apply_local("hot", Increment(amount=1))
    assert a.core.digests.dirty >= 1
    a.core.digests.flush(10**6)  # what a session start does: everything, settled or not
    assert a.core.digests.dirty == 0


def test_concurrent_big_transfers_into_one_replica_share_one_reassembly_budget() -> None:
    """``max_reassembly_bytes`` bounds a replica's memory for chunked states, whichever role receives them: here a
    is at once the initiator of a session with b (b's big state arrives in replies) and the responder of c's session
    (c's big state arrives in requests). Room for one transfer, not two: they compete for the one budget (the older
    is evicted), and run one after the other both get through."""
    config = ReplicationConfig(sync_message_bytes=16 * 1024, max_reassembly_bytes=150 * 1024)
    a, b, c = (Replica(name, config, seed=i) for i, name in enumerate("abc"))
    for replica in (b, c):
        big = ORSet()
        big.merge(big.add_all(replica.id, [f"element-{i:05}" for i in range(6_000)]))  # ~90 KB: several messages
        replica.keyspace.merge_remote(f"big-{replica.id}", "set", big)
        replica.core.on_changed(f"big-{replica.id}")
    assert config.max_reassembly_bytes / 2 < len(encode(big)) < config.max_reassembly_bytes

    budget = a.core.reassembler
    from_b, opening_b = a.core.start_sync("b", 0.0)
    from_c, opening_a = c.core.start_sync("a", 0.0)
    to_b: bytes | None = opening_b
    to_a: bytes | None = opening_a
    while to_b is not None or to_a is not None:  # one round trip of each session in turn
        if to_b is not None:
            to_b = from_b.receive(b.core.handle_request(to_b, "a", 0.0), 0.0)
        if to_a is not None:
            to_a = from_c.receive(a.core.handle_request(to_a, "c", 0.0), 0.0)
        assert budget.reserved_bytes <= config.max_reassembly_bytes
    a.core.sync_finished(from_b)
    c.core.sync_finished(from_c)
    assert budget.evicted, "both transfers were reserved in the same budget"

    sync_pair(a.core, b.core, 1.0)
    sync_pair(c.core, a.core, 1.0)
    assert {"big-b", "big-c"} <= set(a.keyspace)


@pytest.mark.parametrize("contexts", [True, False], ids=["context-rows", "older-peer"])
def test_a_big_set_changed_on_both_sides_costs_what_differs(contexts: bool) -> None:
    """Concurrent changes to one big set. Between peers that read context rows, each side sends its context and
    answers the other's with only what it lacks: both directions cost the difference (under a tenth of the state;
    measured 441 bytes for a 60 KB state). With a peer not known to read them, one side sends its whole state with
    a pushback, the other answers with the diff against that state (its ``delta_since``), not with its whole merged
    state: one state's bytes plus < 4 KiB."""
    a, b = Replica("a", seed=1), Replica("b", seed=2)
    a.keyspace.apply_local("big", SetChange(add=tuple(range(20_000))))
    sync_pair(b.core, a.core, 0.0)
    a.keyspace.apply_local("big", SetChange(add=("only on a",)))
    b.keyspace.apply_local("big", SetChange(add=("only on b",), remove=(7,)))
    full_bytes = len(a.core.encode_key("big") or b"")
    sizes: list[int] = []
    session = sync_pair(a.core, b.core, 1.0, observe=lambda m: sizes.append(len(m)), contexts=contexts)
    assert session.outcome is not None and session.outcome.complete
    assert states(a.keyspace) == states(b.keyspace)
    item = a.keyspace.item("big")
    assert item is not None and {"only on a", "only on b"} <= set(item.value) and 7 not in item.value
    if contexts:
        assert sum(sizes) < full_bytes / 10, (sum(sizes), full_bytes)  # no state whole, either way
    else:
        assert full_bytes < sum(sizes) < full_bytes + 4_096, (sum(sizes), full_bytes)  # one state, not two


def test_read_repair_sends_only_what_the_replier_lacks() -> None:
    a, b = Replica("a", seed=1), Replica("b", seed=2)
    a.keyspace.apply_local("big", SetChange(add=tuple(range(2_000))))
    sync_pair(b.core, a.core, 0.0)
    a.keyspace.apply_local("big", SetChange(add=("new on a",)))
    theirs = a.core.merge_state_reply("big", b.core.state_reply("big"))  # a reads with r=2: b's answer
    entry = a.keyspace.entry("big")
    assert entry is not None
    full = encode(entry.state)
    # c answered a state equal to the merged one: nothing to repair there
    ((member, payload),) = a.core.repair_requests("big", {"b": theirs, "c": full})
    assert member == "b" and len(payload) < 256 < len(full)
    b.core.handle_request(payload, "a", 1.0)
    assert states(a.keyspace) == states(b.keyspace)


def test_a_message_carries_at_most_max_states_per_message_states() -> None:
    """Each step's merging work is bounded like its bytes: 1,000 small states that would fit one message by size
    travel in messages of at most `max_states_per_message` (200), and the session still repairs everything."""
    a, b = _loaded_pair(3_000)
    for i in range(0, 3_000, 3):
        a.keyspace.apply_local(f"k{i:06d}", Increment(amount=5))
    a.core.digests.flush(10**9)
    cap = b.core.ae_config.max_states_per_message
    assert cap == 200
    merged_per_step: list[int] = [0]
    merge = b.core.merge_blob

    def counting(key: bytes, blob: bytes) -> None:
        merged_per_step[-1] += 1
        merge(key, blob)

    b.core.merge_blob = counting  # type: ignore[method-assign]
    b.core.responder._replica.merge = counting
    session = sync_pair(b.core, a.core, 1.0, observe=lambda _: merged_per_step.append(0))
    assert session.outcome is not None and session.outcome.complete and session.outcome.states_received == 1_000
    assert max(merged_per_step) <= cap and sum(merged_per_step) == 1_000
    assert states(a.keyspace) == states(b.keyspace)
